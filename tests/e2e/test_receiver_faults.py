"""The real receiver process under faults: the broker disappears and comes back; SIGTERM mid-traffic."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from deploy.local.infra import Broker, free_port, start_broker
from shared.kafka import TopicSpec, decode_headers, ensure_topics
from tests.conftest import Infra, Topics, make_topics
from tests.e2e.harness import Pipeline
from tests.integration.receiver.conftest import basic, read_topic
from tests.unit.receiver.payloads import log_body, records_in, retry_delay_of, status_of


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of this test's own, so it can be killed and restarted on the same port."""
    broker = start_broker(log_file=tmp_path / "broker.log")
    try:
        yield broker
    finally:
        broker.stop()


async def _post(client: httpx.AsyncClient, url: str, token: str, body: bytes) -> httpx.Response:
    return await client.post(f"{url}/v1/logs", content=body, headers={
        "Content-Type": "application/x-protobuf", "Authorization": basic("acme", token)})


async def test_broker_outage_is_503_with_retry_after_and_sends_resume_when_it_returns(
    infra: Infra, database_url: str, own_broker: Broker, tmp_path: Path
) -> None:
    topics = await make_topics(own_broker.bootstrap)
    metrics_port = free_port()
    operator = f"http://127.0.0.1:{metrics_port}"
    pipe = Pipeline(database_url, own_broker.bootstrap, topics, tmp_path, extra_env={
        "ENQUEUE_TIMEOUT_SECONDS": "2", "RETRY_AFTER_SECONDS": "3", "BROKER_PROBE_INTERVAL_SECONDS": "0.5",
        "RECEIVER_METRICS_PORT": str(metrics_port)})
    pipe.start("receiver")
    broker = own_broker
    try:
        token = await pipe.licence("acme", tenant="tenant-acme")
        async with httpx.AsyncClient(timeout=30) as client:
            assert (await _post(client, pipe.url, token, log_body(2, text="before"))).status_code == 200

            broker.kill()
            started = time.monotonic()
            down = await _post(client, pipe.url, token, log_body(2, text="during"))
            assert down.status_code == 503, down.content
            assert time.monotonic() - started < 6, "a broker outage must be answered, not hang"
            assert down.headers["retry-after"] == "3"
            assert retry_delay_of(status_of(down)) == 3
            started = time.monotonic()
            fast = await _post(client, pipe.url, token, log_body(2, text="during"))
            assert fast.status_code == 503
            assert time.monotonic() - started < 1, "once the outage is known, 503 comes at once"
            assert (await client.get(f"{pipe.url}/healthz")).status_code == 200
            assert (await client.get(f"{pipe.url}/readyz")).status_code == 503
            # The operator's port says the same, and carries the metrics, which the clients' port does not.
            assert (await client.get(f"{operator}/readyz")).status_code == 503
            assert "otelcol_receiver_broker_available 0.0" in (await client.get(f"{operator}/metrics")).text
            assert (await client.get(f"{pipe.url}/metrics")).status_code == 404

            broker = start_broker(port=own_broker.port, log_file=tmp_path / "broker-2.log")
            try:
                # The broker is in-memory: the restarted one starts empty, as a new cluster would.
                await make_topics_named(broker.bootstrap, topics)
                deadline = time.monotonic() + 60
                while True:
                    answer = await _post(client, pipe.url, token, log_body(2, text="after"))
                    if answer.status_code == 200:
                        break
                    assert answer.status_code == 503, answer.content
                    assert time.monotonic() < deadline, "sends did not resume after the broker came back"
                    await asyncio.sleep(0.5)
                assert (await client.get(f"{pipe.url}/readyz")).status_code == 200
                assert (await client.get(f"{operator}/readyz")).status_code == 200
                metrics = (await client.get(f"{operator}/metrics")).text
                assert 'otelcol_receiver_accepted_log_records_total{receiver="otlp",tenant="tenant-acme"' in metrics
                messages = await read_topic(broker.bootstrap, topics.raw_logs)
                assert any("after" in name for m in messages for name in records_in(m.value))
            finally:
                pipe.stop()  # before the broker, so its producer can say goodbye
                broker.stop()
    finally:
        pipe.stop()
    assert "Traceback" not in pipe.log_of("receiver")


async def make_topics_named(bootstrap: str, topics: Topics) -> None:
    await ensure_topics(bootstrap, [TopicSpec(topics.raw_logs, 3), TopicSpec(topics.raw_metrics, 3)])


async def test_sigterm_stops_accepting_drains_in_flight_sends_and_exits_cleanly(
    infra: Infra, database_url: str, topics: Topics, tmp_path: Path
) -> None:
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path)
    pipe.start("receiver")
    token = await pipe.licence("acme", tenant="tenant-acme")
    assert pipe.group is not None
    process = pipe.group.processes["receiver"]
    slow_body = log_body(10, text="slow")
    release = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield slow_body[:100]
        await release.wait()
        yield slow_body[100:]

    try:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as client:
            slow = asyncio.create_task(client.post(f"{pipe.url}/v1/logs", content=trickle(), headers={
                "Content-Type": "application/x-protobuf", "Authorization": basic("acme", token)}))
            bodies = [log_body(20, text=f"drain-{i}") for i in range(40)]
            requests = [asyncio.create_task(_post(client, pipe.url, token, body)) for body in bodies]
            await asyncio.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            # Draining: the listener is closed, so a new connection is refused...
            async with httpx.AsyncClient(timeout=5) as newcomer:
                with pytest.raises(httpx.TransportError):
                    await newcomer.get(f"{pipe.url}/healthz")
            # ...while the request already in flight is still served to the end.
            release.set()
            slow_answer = await slow
            results = await asyncio.gather(*requests, return_exceptions=True)
            exit_code = await asyncio.to_thread(process.wait, 30)
            assert exit_code == 0, pipe.log_of("receiver")
    finally:
        pipe.stop()
    assert slow_answer.status_code == 200
    answered = [r for r in results if isinstance(r, httpx.Response)]
    assert all(r.status_code == 200 for r in answered)
    accepted = {r.headers["x-request-id"] for r in [*answered, slow_answer]}
    stored = {decode_headers(m.headers)["request_id"] for m in await read_topic(infra.bootstrap, topics.raw_logs)}
    # Every 200 was acknowledged by the broker before it was sent: nothing answered 200 is missing.
    assert accepted <= stored
    assert "receiver stopped" in pipe.log_of("receiver")
