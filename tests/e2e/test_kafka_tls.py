"""The whole pipeline over mutual TLS to Kafka: Tansu behind stunnel, with a CA and certificates made here.

The broker advertises only the TLS port, so every client (receiver, redactor, signer, auditctl) reaches it
through TLS or not at all. A client that does not trust the broker's certificate is refused with a message
that names the cause, instead of retrying "broker not reachable" forever.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from deploy.local.tls import Authority
from shared.db.pool import connect
from shared.kafka import (
    KafkaConfigError,
    KafkaConnection,
    KafkaSecurity,
    TopicSpec,
    ensure_topics,
    make_producer,
    refuse_misconfigured_client,
)
from shared.verify import published_keys, tenants, verify_tenant
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline
from tests.kafka_security.tls_broker import TlsBroker, tls_broker


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    with tls_broker(tmp_path_factory.mktemp("kafka-tls")) as running:
        yield running


def _connection(broker: TlsBroker, *, ca: Path | None = None, client_cert: bool = True) -> KafkaConnection:
    return KafkaConnection(broker.bootstrap, KafkaSecurity(
        protocol="SSL",
        ssl_ca_file=ca or broker.ca.ca_cert,
        ssl_cert_file=broker.client_cert if client_cert else None,
        ssl_key_file=broker.client_key if client_cert else None,
    ))


async def _tls_topics(connection: KafkaConnection) -> Topics:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(f"raw-logs-{suffix}", f"raw-metrics-{suffix}", f"canonical-{suffix}", f"dlq-{suffix}")
    await ensure_topics(connection, [TopicSpec(topics.raw_logs, 2), TopicSpec(topics.raw_metrics, 2),
                                     TopicSpec(topics.canonical, 2), TopicSpec(topics.dead_letter, 1)])
    return topics


async def test_the_pipeline_runs_over_mutual_tls(
    broker: TlsBroker, infra: Infra, database_url: str, tmp_path: Path, fixtures_dir: Path
) -> None:
    topics = await _tls_topics(_connection(broker))
    pipe = Pipeline(database_url, broker.bootstrap, topics, tmp_path, extra_env=broker.env())
    pipe.start()
    try:
        token = await pipe.licence("acme", tenant="tenant-tls")
        response = await pipe.post("/v1/logs", (fixtures_dir / "logs-tool-session.json.gz").read_bytes(),
                                   org="acme", token=token, content_type="application/json",
                                   content_encoding="gzip")
        assert response.status_code == 200, response.content
        rows = await pipe.wait_for_rows(1)
        assert rows, pipe.log_of("redactor") + pipe.log_of("signer")
        await asyncio.sleep(1)  # the rest of the batch
        conn = await connect(database_url)
        try:
            reports = [await verify_tenant(conn, t, await published_keys(conn)) for t in await tenants(conn)]
        finally:
            await conn.close()
        assert reports and all(r.ok for r in reports)
        # The services really spoke TLS: stunnel saw verified client certificates for the connections.
        assert "Certificate accepted at depth=0: CN=client" in broker.stunnel_log.read_text(errors="replace")
    finally:
        pipe.stop()
    # Nothing can bypass TLS: the broker's plain port is not advertised, and its TLS port refuses plain Kafka.
    plain = make_producer(broker.bootstrap, 1_000_000, request_timeout_ms=3_000)
    with pytest.raises(KafkaConnectionError):
        await plain.start()
    await plain.stop()


async def test_a_broker_certificate_from_another_ca_is_refused_clearly(broker: TlsBroker, tmp_path: Path) -> None:
    stranger = Authority.create(tmp_path, "stranger")
    wrong = _connection(broker, ca=stranger.ca_cert)
    with pytest.raises(KafkaConfigError, match=r"does not trust \(.+\); check KAFKA_SSL_CA_FILE"):
        await refuse_misconfigured_client(wrong)
    await refuse_misconfigured_client(_connection(broker))  # the right CA passes the same check

    # A service configured so stops at start with that message, instead of retrying forever.
    env = {**broker.env(), "KAFKA_SSL_CA_FILE": str(stranger.ca_cert), "REDACTOR_METRICS_PORT": "0",
           "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    finished = await asyncio.to_thread(_run, ["-m", "services.redactor"], env)
    assert finished.returncode != 0
    assert "redactor: the Kafka broker at 127.0.0.1" in finished.stderr
    assert "does not trust" in finished.stderr and "Traceback" not in finished.stderr

    # So does auditctl.
    finished = await asyncio.to_thread(_run, ["-m", "services.auditctl", "dlq", "list"], env)
    assert finished.returncode == 1
    assert "does not trust" in finished.stderr and "Traceback" not in finished.stderr


async def test_a_client_without_a_certificate_is_turned_away(broker: TlsBroker) -> None:
    producer = make_producer(_connection(broker, client_cert=False), 1_000_000, request_timeout_ms=3_000)
    with pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    return subprocess.run([sys.executable, *args], env={**base, **env}, capture_output=True, text=True,
                          timeout=60, check=False)
