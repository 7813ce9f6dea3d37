"""The whole pipeline over mutual TLS to Kafka: Tansu behind stunnel, with a CA and certificates made here.

The broker advertises only the TLS port, so every client (receiver, redactor, signer, auditctl) reaches it
through TLS or not at all. A client that does not trust the broker's certificate is refused with a message
that names the cause, instead of retrying "broker not reachable" forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from deploy.local.tls import Authority
from shared.kafka import (
    KafkaConfigError,
    KafkaConnection,
    KafkaSecurity,
    make_producer,
    refuse_misconfigured_client,
)
from tests.conftest import Infra
from tests.e2e.harness import Pipeline
from tests.e2e.secured_kafka import (
    assert_capture_is_chained_and_verifies,
    fresh_topics,
    run_with_only_these_kafka_settings,
)
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


async def test_the_pipeline_runs_over_mutual_tls(
    broker: TlsBroker, infra: Infra, database_url: str, tmp_path: Path, fixtures_dir: Path
) -> None:
    topics = await fresh_topics(_connection(broker))
    pipe = Pipeline(database_url, broker.bootstrap, topics, tmp_path, extra_env=broker.env())
    pipe.start()
    try:
        await assert_capture_is_chained_and_verifies(pipe, fixtures_dir, tenant="tenant-tls")
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
    finished = await asyncio.to_thread(run_with_only_these_kafka_settings, ["-m", "services.redactor"], env, 60)
    assert finished.returncode != 0
    assert "redactor: the Kafka broker at 127.0.0.1" in finished.stderr
    assert "does not trust" in finished.stderr and "Traceback" not in finished.stderr

    # So does auditctl.
    finished = await asyncio.to_thread(run_with_only_these_kafka_settings, ["-m", "services.auditctl", "dlq", "list"], env, 60)
    assert finished.returncode == 1
    assert "does not trust" in finished.stderr and "Traceback" not in finished.stderr


async def test_a_client_without_a_certificate_is_turned_away(broker: TlsBroker) -> None:
    producer = make_producer(_connection(broker, client_cert=False), 1_000_000, request_timeout_ms=3_000)
    with pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()
