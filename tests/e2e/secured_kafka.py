"""What the end-to-end tests over a secured broker (mutual TLS, SASL) share: topics of the test's own on that
broker, the real capture through the whole pipeline and verified, and a process whose Kafka settings are only
the ones the test gives it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

from shared.db.pool import connect
from shared.kafka import KafkaConnection, TopicSpec, ensure_topics
from shared.verify import published_keys, tenants, verify_tenant
from tests.conftest import Topics
from tests.e2e.harness import Pipeline


async def fresh_topics(connection: KafkaConnection) -> Topics:
    """The pipeline's four topics under a new suffix, created through ``connection``."""
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(f"raw-logs-{suffix}", f"raw-metrics-{suffix}", f"canonical-{suffix}", f"dlq-{suffix}")
    await ensure_topics(connection, [TopicSpec(topics.raw_logs, 2), TopicSpec(topics.raw_metrics, 2),
                                     TopicSpec(topics.canonical, 2), TopicSpec(topics.dead_letter, 1)])
    return topics


async def assert_capture_is_chained_and_verifies(pipe: Pipeline, fixtures_dir: Path, *, tenant: str) -> None:
    """A real Claude Code capture posted to the running pipeline's receiver is chained, and every tenant's
    chain then verifies."""
    token = await pipe.licence("acme", tenant=tenant)
    response = await pipe.post("/v1/logs", (fixtures_dir / "logs-tool-session.json.gz").read_bytes(),
                               org="acme", token=token, content_type="application/json",
                               content_encoding="gzip")
    assert response.status_code == 200, response.content
    rows = await pipe.wait_for_rows(1)
    assert rows, pipe.log_of("redactor") + pipe.log_of("signer")
    await asyncio.sleep(1)  # the rest of the batch
    conn = await connect(pipe.database_url)
    try:
        reports = [await verify_tenant(conn, t, await published_keys(conn)) for t in await tenants(conn)]
    finally:
        await conn.close()
    assert reports and all(r.ok for r in reports)


def run_with_only_these_kafka_settings(args: list[str], env: dict[str, str],
                                       timeout: float) -> subprocess.CompletedProcess[str]:
    """``python args`` with the Kafka settings of ``env`` and none inherited from the test's own environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    return subprocess.run([sys.executable, *args], env={**base, **env}, capture_output=True, text=True,
                          timeout=timeout, check=False)
