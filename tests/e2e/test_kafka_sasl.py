"""Kafka SASL for real: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER, over SASL_PLAINTEXT and SASL_SSL.

The local broker can require SCRAM but cannot hold users in memory, so a small SASL-terminating proxy
(tests/kafka_security/sasl_proxy.py, speaking Kafka's SaslHandshake/SaslAuthenticate v1) authenticates
clients in front of it, with stunnel in front of the proxy for SASL_SSL. The clients are the project's own
(aiokafka, configured by shared.kafka from the settings), so what is proven is that the settings reach
aiokafka and that its handshake completes; ACLs are not enforced by the proxy (tests/deploy checks them).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.local.infra import free_port
from deploy.local.stack import wait_ready
from shared.db.pool import connect
from shared.kafka import (
    KafkaConfigError,
    KafkaConnection,
    KafkaSecurity,
    TopicSpec,
    ensure_topics,
    make_consumer,
    make_producer,
    refuse_misconfigured_client,
)
from shared.settings import CommonSettings
from tests.conftest import Infra
from tests.e2e.harness import Pipeline
from tests.e2e.secured_kafka import (
    assert_capture_is_chained_and_verifies,
    fresh_topics,
    run_with_only_these_kafka_settings,
)
from tests.kafka_security.tls_broker import SaslBroker, sasl_broker

USERS = {"pipeline": "correct horse battery staple", "ops": "another-secret", "oauth": "bearer-token-1"}


@pytest.fixture(scope="module", params=["SASL_PLAINTEXT", "SASL_SSL"])
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    with sasl_broker(tmp_path_factory.mktemp("kafka-sasl"), USERS, tls=request.param == "SASL_SSL") as running:
        yield running


def _connection(broker: SaslBroker, user: str, mechanism: str) -> KafkaConnection:
    env = broker.env(user, mechanism)
    if mechanism == "OAUTHBEARER":
        token = broker.folder / "token"
        token.write_text(USERS["oauth"] + "\n")
        token.chmod(0o600)
        env = {k: v for k, v in env.items() if "USERNAME" not in k and "PASSWORD" not in k}
        env["KAFKA_SASL_OAUTHBEARER_TOKEN_FILE"] = str(token)
    options: dict[str, Any] = {k.lower(): v for k, v in env.items()}
    settings = CommonSettings(**options)
    return settings.kafka_connection()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"])
async def test_each_mechanism_authenticates_and_carries_messages(broker: SaslBroker, mechanism: str) -> None:
    connection = _connection(broker, "pipeline", mechanism)
    topic = f"sasl-{uuid.uuid4().hex[:8]}"
    await ensure_topics(connection, [TopicSpec(topic, 1)])
    producer = make_producer(connection, 1_000_000)
    await producer.start()
    try:
        await (await producer.send(topic, b"authenticated"))
    finally:
        await producer.stop()
    consumer = make_consumer(connection, f"g-{topic}", topic)
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000)
        assert [m.value for records in batch.values() for m in records] == [b"authenticated"]
    finally:
        await consumer.stop()
    log = broker.proxy_log.read_text()
    assert f"authenticated {'a bearer token' if mechanism == 'OAUTHBEARER' else 'pipeline'} via {mechanism}" in log


async def test_wrong_credentials_are_refused_with_a_clear_error(broker: SaslBroker) -> None:
    wrong = _connection(broker, "intruder", "SCRAM-SHA-512")  # no such user: its password file is wrong too
    with pytest.raises(KafkaConfigError, match=r"refused this client's SASL authentication as intruder"):
        await refuse_misconfigured_client(wrong)
    await refuse_misconfigured_client(_connection(broker, "pipeline", "SCRAM-SHA-512"))
    env = {**broker.env("intruder"), "REDACTOR_METRICS_PORT": "0",
           "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    finished = await asyncio.to_thread(run_with_only_these_kafka_settings, ["-m", "services.redactor"], env, 90)
    assert finished.returncode != 0
    assert "redactor: the Kafka broker at 127.0.0.1" in finished.stderr, finished.stderr[-2000:]
    assert "Traceback" not in finished.stderr


async def test_the_pipeline_runs_over_sasl(
    broker: SaslBroker, infra: Infra, database_url: str, tmp_path: Path, fixtures_dir: Path
) -> None:
    connection = _connection(broker, "pipeline", "SCRAM-SHA-512")
    topics = await fresh_topics(connection)
    reporter_port = free_port()
    pipe = Pipeline(database_url, broker.bootstrap, topics, tmp_path, extra_env={
        **broker.env("pipeline"), "REPORTER_PORT": str(reporter_port), "REPORTER_HOST": "127.0.0.1"})
    pipe.start()
    assert pipe.group is not None
    pipe.group.start("reporter")  # its access events reach the canonical topic over SASL too
    try:
        await assert_capture_is_chained_and_verifies(pipe, fixtures_dir, tenant="tenant-sasl")
        wait_ready(f"http://127.0.0.1:{reporter_port}/readyz", 60)
        auditor = await pipe.token("acme", "auditor", tenant="tenant-sasl")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{reporter_port}", timeout=30,
                                     headers={"Authorization": f"Bearer {auditor}"}) as client:
            feed = (await client.get("/api/v1/audit/events", params={"limit": "1"})).json()
            proof = await client.get(feed["items"][0]["proof"])  # a proof read: an access event
            assert proof.status_code == 200, proof.text
        deadline = time.monotonic() + 60
        while not await _access_rows(database_url) and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        assert await _access_rows(database_url), pipe.log_of("reporter")[-3000:]
    finally:
        pipe.stop()


async def _access_rows(database_url: str) -> int:
    conn = await connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM audit_logs WHERE plane = 'access'"))
    finally:
        await conn.close()


_ = KafkaSecurity  # the settings build it: CommonSettings.kafka_connection()
