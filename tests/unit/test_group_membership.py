"""Group membership settings reach the consumer, and readiness follows the partition assignment."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from deploy.local.stack import consumer_readiness_urls
from services.redactor.settings import RedactorSettings
from services.redactor.worker import RedactorMetrics, RedactorWorker
from services.usage.worker import UsageMetrics, UsageWorker
from shared.kafka import make_consumer
from tests.messages_support import canonical_key, raw_keyring


async def test_static_membership_and_short_rebalances_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_GROUP_INSTANCE_ID", "redactor-0")
    monkeypatch.setenv("KAFKA_SESSION_TIMEOUT_MS", "9000")
    settings = RedactorSettings()
    options = settings.kafka_consumer_options()
    assert options == {"session_timeout_ms": 9000, "rebalance_timeout_ms": 3000, "fetch_max_wait_ms": 20,
                       "group_instance_id": "redactor-0"}
    consumer = make_consumer("broker:9092", "group", "topic", **options)
    assert consumer._group_instance_id == "redactor-0"
    assert consumer._session_timeout_ms == 9000
    assert consumer._heartbeat_interval_ms == 1500
    assert consumer._rebalance_timeout_ms == 3000
    # aiokafka's own 500 ms is added at each consumer stage when the broker holds waiting fetches to the end.
    assert consumer._fetch_max_wait_ms == 20


def test_the_instance_name_can_be_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # Compose's replicas share one environment; each container's host name (kept across its restarts) differs.
    monkeypatch.setenv("KAFKA_GROUP_INSTANCE_ID", "redactor-{hostname}")
    monkeypatch.setattr("socket.gethostname", lambda: "3f2a9c1d04be")
    assert RedactorSettings().kafka_consumer_options()["group_instance_id"] == "redactor-3f2a9c1d04be"


async def test_dynamic_membership_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_GROUP_INSTANCE_ID", raising=False)
    monkeypatch.delenv("KAFKA_SESSION_TIMEOUT_MS", raising=False)
    options = RedactorSettings().kafka_consumer_options()
    assert "group_instance_id" not in options
    assert options["session_timeout_ms"] == 6000  # Apache Kafka's default group.min.session.timeout.ms
    assert make_consumer("broker:9092", "group", **options)._group_instance_id is None


class _Consumer:
    def __init__(self) -> None:
        self.listener: Any = None

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.listener = listener


def test_the_redactor_is_ready_only_once_assigned_even_an_empty_set() -> None:
    consumer = _Consumer()
    worker = RedactorWorker(consumer, None, None, None, raw_topic="raw", canonical_topic="c",  # type: ignore[arg-type]
                            dead_letter_topic="d", max_pending=1, metrics=RedactorMetrics(CollectorRegistry()),
                            raw_keyring=raw_keyring(), canonical_key=canonical_key(), max_message_bytes=1 << 20)
    worker.subscribe()
    assert not worker.assigned
    asyncio.run(consumer.listener.on_partitions_assigned(set()))
    assert worker.assigned


def test_a_pending_head_start_holds_the_assigned_partitions_until_it_is_taken_over() -> None:
    consumer = _Consumer()
    paused: list[TopicPartition] = []
    consumer.pause = lambda *tps: paused.extend(tps)  # type: ignore[attr-defined]
    worker = RedactorWorker(consumer, None, None, None, raw_topic="raw", canonical_topic="c",  # type: ignore[arg-type]
                            dead_letter_topic="d", max_pending=1, metrics=RedactorMetrics(CollectorRegistry()),
                            raw_keyring=raw_keyring(), canonical_key=canonical_key(), max_message_bytes=1 << 20)
    worker.head_start = object()  # type: ignore[assignment]
    worker.subscribe()
    assigned = {TopicPartition("raw", 0), TopicPartition("raw", 1)}
    asyncio.run(consumer.listener.on_partitions_assigned(assigned))
    # Ready (an event sent now is processed now), but nothing is fetched before the run loop takes the head start over.
    assert worker.assigned
    assert set(paused) == assigned
    assert worker.head_start_for == assigned


def test_the_usage_consumer_is_ready_only_once_assigned() -> None:
    consumer = _Consumer()
    worker = UsageWorker(consumer, None, None, topic="m", dead_letter_topic="d", max_batch=1, engine=None,  # type: ignore[arg-type]
                         metrics=UsageMetrics(CollectorRegistry()), stop=asyncio.Event(), raw_keyring=raw_keyring())
    worker.subscribe()
    assert not worker.assigned
    asyncio.run(consumer.listener.on_partitions_assigned(set()))
    assert worker.assigned


def test_make_run_waits_for_every_consumer_whose_health_port_is_on() -> None:
    urls = consumer_readiness_urls({"SIGNER_METRICS_PORT": "0", "USAGE_METRICS_PORT": "19467"})
    assert urls == ["http://127.0.0.1:9465/readyz", "http://127.0.0.1:19467/readyz"]


class _FetchOnce(_Consumer):
    """One fetch of ``count`` raw messages (not decodable: each becomes a dead letter, which is produced and
    committed like any output), then a stop."""

    def __init__(self, count: int, stop: asyncio.Event) -> None:
        super().__init__()
        self._messages = [SimpleNamespace(topic="raw", partition=0, offset=offset, key=b"k", value=b"?", headers=[])
                          for offset in range(count)]
        self._stop = stop
        self.commits: list[int] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self._stop.set()
        messages, self._messages = self._messages, []
        return {TopicPartition("raw", 0): messages} if messages else {}

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append(offsets[TopicPartition("raw", 0)].offset)

    def assignment(self) -> set[TopicPartition]:
        return set()


class _Acknowledging:
    async def send_many(self, records: Any) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_the_redactor_commits_what_is_acknowledged_while_it_works_through_a_large_fetch() -> None:
    async def scenario() -> list[int]:
        stop = asyncio.Event()
        consumer = _FetchOnce(5, stop)
        worker = RedactorWorker(consumer, _Acknowledging(), None, None, raw_topic="raw",  # type: ignore[arg-type]
                                canonical_topic="c", dead_letter_topic="d", max_pending=10,
                                metrics=RedactorMetrics(CollectorRegistry()), raw_keyring=raw_keyring(),
                                canonical_key=canonical_key(), max_message_bytes=1 << 20)
        worker.commit._interval = 0.0  # every chance to commit is taken
        await worker.run(stop)
        return consumer.commits

    # A crash in the middle of the fetch redoes only what came after the last commit, not the whole fetch.
    assert asyncio.run(scenario()) == [1, 2, 3, 4, 5]
