"""The metrics consumer against a real broker and PostgreSQL: idempotent, offsets after the database."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from prometheus_client import CollectorRegistry

from services.usage.worker import UsageMetrics, UsageWorker
from shared import otlp
from shared.db.pool import create_pool
from shared.kafka import make_consumer, make_producer
from shared.pii import PiiEngine, build_engine
from shared.usage_columns import DAILY_COLUMNS
from tests.conftest import DETECTION_BUDGET_FOR_TESTS_MS, Infra, Topics
from tests.integration.reporter.conftest import Reporter
from tests.messages_support import raw_headers, raw_keyring
from tests.unit.reporter.metric_payloads import export


@functools.cache
def _engine() -> PiiEngine:
    return build_engine(field_time_budget_ms=DETECTION_BUDGET_FOR_TESTS_MS)


SESSION = "9c82ae41-69ad-4e74-85a8-70cc8c88f69c"
USER = "549194b3250c8d36100b151a3a002230bbebfe2166dd98d789007d94f7b8653f"


HeaderList = list[tuple[str, bytes]]


def headers(tenant: str = "tenant-a", org: str = "acme",
            content_type: str = otlp.PROTOBUF) -> Callable[[bytes], HeaderList]:
    """The receiver's headers for a payload, authenticated as the receiver does."""
    return lambda value: raw_headers(value, tenant=tenant, org=org, kind="metrics", content_type=content_type,
                                     license_id="lic")


async def produce(infra: Infra, topic: str,
                  messages: Sequence[tuple[bytes | None, HeaderList | Callable[[bytes], HeaderList]]]) -> None:
    producer = make_producer(infra.bootstrap, 1_000_000)
    await producer.start()
    try:
        for value, hdrs in messages:
            made = hdrs(value or b"") if callable(hdrs) else hdrs
            await (await producer.send(topic, value, key=b"tenant-a", headers=made))
    finally:
        await producer.stop()


class RunningWorker:
    """A UsageWorker on its own consumer group member, until stopped."""

    def __init__(self, infra: Infra, topics: Topics, database_url: str, group: str) -> None:
        self.infra, self.topics, self.database_url, self.group = infra, topics, database_url, group
        self.stop = asyncio.Event()

    async def __aenter__(self) -> UsageWorker:
        self.pool = await create_pool(self.database_url, min_size=1, max_size=2)
        self.consumer = make_consumer(self.infra.bootstrap, self.group, session_timeout_ms=6000)
        self.producer = make_producer(self.infra.bootstrap, 1_000_000)
        await self.consumer.start()
        await self.producer.start()
        self.worker = UsageWorker(self.consumer, self.producer, self.pool, topic=self.topics.raw_metrics,
                                  dead_letter_topic=self.topics.dead_letter, max_batch=50,
                                  metrics=UsageMetrics(CollectorRegistry()), stop=self.stop, engine=_engine(),
                                  raw_keyring=raw_keyring())
        self.worker.subscribe()
        self.task = asyncio.create_task(self.worker.run())
        return self.worker

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 20)
        await self.consumer.stop()
        await self.producer.stop()
        await self.pool.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def committed(consumer: Any, topic: str) -> int:
    """Sum of the committed offsets of a running member's group (asked through that member)."""
    total = 0
    for partition in consumer.partitions_for_topic(topic) or set():
        total += await consumer.committed(TopicPartition(topic, partition)) or 0
    return total


async def daily(db: asyncpg.Connection) -> dict[str, float]:
    """The metric columns of report_usage_daily, summed over the table; only the non-zero ones."""
    columns = [c for c in DAILY_COLUMNS if c != "m_points"]
    row = await db.fetchrow(f"SELECT {', '.join(f'sum({c}) AS {c}' for c in columns)} FROM report_usage_daily")
    return {column.removeprefix("m_"): value for column, value in row.items() if value}


async def test_the_real_export_becomes_usage_once_however_often_it_comes(
        infra: Infra, topics: Topics, database_url: str, db: asyncpg.Connection, fixtures_dir: Path,
        reporter: Reporter) -> None:
    body = (fixtures_dir / "metrics-tool-session.pb").read_bytes()
    group = f"usage-{uuid.uuid4().hex[:8]}"
    await produce(infra, topics.raw_metrics, [(body, headers()), (body, headers())])  # a client retry
    async with RunningWorker(infra, topics, database_url, group) as worker:
        async def stored() -> bool:
            return await db.fetchval("SELECT count(*) FROM usage_points") == 7 and \
                await committed(worker.consumer, topics.raw_metrics) == 2
        await eventually(stored)
    first = await daily(db)
    assert first == pytest.approx({"cost": 0.0137, "input_tokens": 2400, "output_tokens": 174,
                                   "cache_read_tokens": 600, "cache_creation_tokens": 100, "sessions_started": 1,
                                   "active_cli_seconds": 0.182})
    by_model = await db.fetch("SELECT model, cost, input_tokens FROM usage_metric_model_daily")
    assert [(r["model"], r["input_tokens"]) for r in by_model] == [("claude-opus-5-5", 2400)]
    assert {r["user_key"] for r in await db.fetch("SELECT user_key FROM usage_points")} == {USER}
    assert {r["tenant_id"] for r in await db.fetch("SELECT tenant_id FROM usage_points")} == {"tenant-a"}

    # The crash case: a new member of a fresh group reads everything again. Nothing is counted twice.
    async with RunningWorker(infra, topics, database_url, f"{group}-replay") as worker:
        await eventually(lambda: _committed_n(worker, topics.raw_metrics, 2))
        assert worker.metrics.duplicates._value.get() == 7 * 2
    assert await daily(db) == first

    # And the reporter shows it: per user, and in the session's summary... for a session the logs never saw,
    # the summary is 404 (it is built from audit rows), so check usage only.
    usage = (await reporter.client.get("/api/v1/usage", params={"group_by": "user", "since": "2026-11-28",
                                                                "until": "2026-11-29"},
                                       headers=reporter.tenant_a)).json()
    [group_row] = usage["groups"]
    assert group_row["key"] == USER
    metrics = group_row["metrics"]
    assert metrics["cost"] == "0.013700" and metrics["tokens"]["total"] == 2400 + 174 + 600 + 100
    assert metrics["active_time_seconds"]["cli"] == pytest.approx(0.182)
    assert metrics["sessions_started"] == 1
    assert group_row["api_calls"] == 0  # no audit rows: events and metrics are kept apart


async def test_cumulative_series_with_duplicates_resets_and_restarts(
        infra: Infra, topics: Topics, database_url: str, db: asyncpg.Connection) -> None:
    name = "claude_code.lines_of_code.count"
    extra = {"type": "added"}
    batches = [
        export(name, [(0, 10, 100)], cumulative=True, extra=extra),
        export(name, [(0, 20, 250), (0, 20, 250)], cumulative=True, extra=extra),  # a duplicate point
        export(name, [(0, 30, 200)], cumulative=True, extra=extra),  # dropped: a reset, +200
        export(name, [(40, 50, 50)], cumulative=True, extra=extra),  # the CLI restarted: +50
        export(name, [(0, 60, 999)], cumulative=True, extra=extra),  # late point of the old run: +0
    ]
    messages = [(b.SerializeToString(), headers()) for b in batches]
    # One of them as OTLP/JSON, as the receiver forwards it when the exporter sends JSON.
    messages[2] = (json.dumps(json_format.MessageToDict(batches[2])).encode(), headers(content_type=otlp.JSON))
    messages.append(messages[1])  # a whole batch redelivered
    await produce(infra, topics.raw_metrics, messages)
    group = f"usage-{uuid.uuid4().hex[:8]}"
    async with RunningWorker(infra, topics, database_url, group) as worker:
        await eventually(lambda: _committed_n(worker, topics.raw_metrics, len(messages)))
    assert await daily(db) == {"lines_added": pytest.approx(100 + 150 + 200 + 50)}
    state = await db.fetchrow("SELECT start_time_ns, last_value FROM usage_series")
    assert state["last_value"] == 50


async def _committed_n(worker: UsageWorker, topic: str, n: int) -> bool:
    return await committed(worker.consumer, topic) == n


async def test_a_message_without_licence_headers_is_dead_lettered_and_passed(
        infra: Infra, topics: Topics, database_url: str, db: asyncpg.Connection) -> None:
    body = export("claude_code.commit.count", [(0, 10, 1)], cumulative=False).SerializeToString()
    no_tenant: list[tuple[str, bytes]] = [("content_type", otlp.PROTOBUF.encode())]
    await produce(infra, topics.raw_metrics, [(body, no_tenant), (b"\xff\xff", headers()), (body, headers())])
    group = f"usage-{uuid.uuid4().hex[:8]}"
    async with RunningWorker(infra, topics, database_url, group) as worker:
        await eventually(lambda: _committed_n(worker, topics.raw_metrics, 3))
        assert worker.metrics.dead_lettered._value.get() == 2
    assert await daily(db) == {"commits": 1}
    dead: list[Any] = []
    # No group: assigned directly, so no group join to wait for.
    consumer = AIOKafkaConsumer(bootstrap_servers=infra.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topics.dead_letter, 0)])
        deadline = time.monotonic() + 20
        while len(dead) < 2 and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                dead += messages
    finally:
        await consumer.stop()
    stages = [dict(m.headers)["dlq.stage"] for m in dead]
    assert stages == [b"usage", b"usage"]


async def test_metric_attributes_are_redacted_before_usage_points(
        infra: Infra, topics: Topics, database_url: str, db: asyncpg.Connection) -> None:
    """Data-point and resource attributes (keys and values) reach usage_points only after redaction."""
    request = export("claude_code.lines_of_code.count", [(0, 10, 5)], cumulative=False,
                     extra={"type": "added", "note": "call Jane Roe on +62 812-3456-7890 or jane.roe@acme.example",
                            "bob.smith@acme.example": "key is personal too"})
    request.resource_metrics[0].resource.attributes.append(
        KeyValue(key="host.owner", value=AnyValue(bytes_value="ssn 123-45-6789 of Hans Müller".encode())))
    await produce(infra, topics.raw_metrics, [(request.SerializeToString(), headers())])
    async with RunningWorker(infra, topics, database_url, f"usage-{uuid.uuid4().hex[:8]}") as worker:
        await eventually(lambda: _committed_n(worker, topics.raw_metrics, 1))
    stored = json.dumps([r["attributes"] for r in await db.fetch("SELECT attributes::text AS attributes FROM usage_points")],
                        ensure_ascii=False)
    for clear in ("812-3456-7890", "jane.roe@acme.example", "bob.smith@acme.example", "123-45-6789", "Müller"):
        assert clear not in stored
    assert "<PHONE>" in stored and "<EMAIL>" in stored and "<US_SSN>" in stored and "<PERSON>" in stored
