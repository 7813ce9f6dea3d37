"""Ready means ready: once every service's /readyz answers 200, an event sent is a signed row at once,
without waiting for the consumer groups to form."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deploy.local.infra import free_port
from deploy.local.stack import consumer_readiness_urls, wait_pipeline_ready
from shared.db.pool import connect
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline

SERVICES = ("receiver", "redactor", "signer", "usage")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
async def pipeline(infra: Infra, database_url: str, topics: Topics, tmp_path: Path) -> AsyncIterator[Pipeline]:
    pipe = Pipeline(
        database_url,
        infra.bootstrap,
        topics,
        tmp_path,
        extra_env={
            "REDACTOR_METRICS_PORT": str(free_port()),
            "SIGNER_METRICS_PORT": str(free_port()),
            "USAGE_METRICS_PORT": str(free_port()),
            "USAGE_GROUP_ID": f"usage-{topics.canonical}",
            # A long session makes the groups slow to form (brokers delay the first join of a new group), so a
            # service that called itself ready before its group assigned it partitions would hold the event
            # back well past the bound below.
            "KAFKA_SESSION_TIMEOUT_MS": "20000",
        },
    )
    try:
        yield pipe
    finally:
        pipe.stop()


async def test_an_event_sent_once_everything_is_ready_is_signed_at_once(
    pipeline: Pipeline, fixtures_dir: Path
) -> None:
    env = pipeline.env()
    pipeline.start(*SERVICES)
    token = await pipeline.licence("acme", tenant="tenant-ready")
    assert len(consumer_readiness_urls(env, SERVICES)) == 3
    await asyncio.to_thread(wait_pipeline_ready, env, 90, SERVICES)

    sent = time.monotonic()
    response = await pipeline.post(
        "/v1/logs", (fixtures_dir / "logs-tool-session.pb").read_bytes(), org="acme", token=token,
        content_type="application/x-protobuf",
    )
    assert response.status_code == 200
    conn = await connect(pipeline.database_url)
    try:
        while not await conn.fetchval("SELECT count(*) FROM audit_logs"):
            # Generous for a loaded test machine; `make bench-pipeline` measures the real figure. Before the
            # consumers reported readiness truthfully, this waited for the groups to form (17 s).
            assert time.monotonic() - sent < 8, "no signed row 8 s after every service reported ready"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    for url in consumer_readiness_urls(env, SERVICES):
        assert _status(url) == 200, url


async def test_a_consumer_is_not_ready_before_its_group_assigns_it_partitions(
    pipeline: Pipeline, infra: Infra
) -> None:
    """The redactor alone, pointed at a broker address where nothing listens: it never joins, never ready."""
    pipeline.extra_env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{free_port()}"
    env = pipeline.env()
    pipeline.start("redactor")
    (url,) = consumer_readiness_urls(env, ("redactor",))
    deadline = time.monotonic() + 60
    while True:
        try:
            status = _status(url)
            break
        except OSError:
            assert time.monotonic() < deadline, "the redactor's health server never came up"
            await asyncio.sleep(0.2)
    await asyncio.sleep(2)
    assert status == 503
    assert _status(url) == 503
    assert _status(url.replace("/readyz", "/healthz")) == 200
