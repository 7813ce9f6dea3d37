"""In-memory stand-ins for the broker and PostgreSQL, for the ops logic's unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from services.auditctl.ops.reader import Record, TimestampAnswer


@dataclass
class FakeTopic:
    """``partitions[p]`` is the list of records; offsets before ``begin[p]`` were removed by retention."""

    partitions: dict[int, list[Record]] = field(default_factory=dict)
    begin: dict[int, int] = field(default_factory=dict)


class FakeBroker:
    """Answers offsets-for-times as Apache Kafka does (``answers="kafka"``), or as Tansu does: offset 0 with
    timestamp -1 (``"zero-unknown"``), or offset 0 with the append time, later than any target
    (``"zero-now"``)."""

    def __init__(self, *, answers: str = "kafka") -> None:
        self.topics: dict[str, FakeTopic] = {}
        self.answers = answers
        self.reads = 0

    def add(self, topic: str, partition: int, timestamp_ms: int, value: bytes = b"v",
            headers: Iterable[tuple[str, bytes]] = (), key: bytes | None = b"k") -> Record:
        records = self.topics.setdefault(topic, FakeTopic()).partitions.setdefault(partition, [])
        record = Record(topic, partition, len(records), timestamp_ms, key, value, tuple(headers))
        records.append(record)
        return record

    def ensure_partition(self, topic: str, partition: int) -> None:
        self.topics.setdefault(topic, FakeTopic()).partitions.setdefault(partition, [])

    async def partitions(self, topic: str) -> list[int]:
        if topic not in self.topics:
            raise LookupError(topic)
        return sorted(self.topics[topic].partitions)

    async def bounds(self, topic: str, partitions: Iterable[int]) -> dict[int, tuple[int, int]]:
        t = self.topics[topic]
        return {p: (t.begin.get(p, 0), len(t.partitions[p])) for p in partitions}

    async def offsets_for_time(self, topic: str, partitions: Iterable[int], ts_ms: int) -> dict[
            int, TimestampAnswer | None]:
        answers: dict[int, TimestampAnswer | None] = {}
        for p in partitions:
            if self.answers == "zero-unknown":
                answers[p] = TimestampAnswer(0, -1)
                continue
            if self.answers == "zero-now":
                answers[p] = TimestampAnswer(0, 2**62)
                continue
            begin = self.topics[topic].begin.get(p, 0)
            found = next((r for r in self.topics[topic].partitions[p][begin:] if r.timestamp_ms >= ts_ms), None)
            answers[p] = None if found is None else TimestampAnswer(found.offset, found.timestamp_ms)
        return answers

    async def first_at_or_after(self, topic: str, partition: int, offset: int, end: int) -> Record | None:
        async for record in self.read_range(topic, partition, offset, end, max_records=1):
            return record
        return None

    async def read_range(self, topic: str, partition: int, start: int, end: int, *,
                         max_records: int | None = None) -> AsyncIterator[Record]:
        self.reads += 1
        t = self.topics[topic]
        for n, record in enumerate(t.partitions[partition][max(start, t.begin.get(partition, 0)):end], start=1):
            yield record
            if max_records is not None and n >= max_records:
                return


class FakeProducer:
    """Acknowledges every send at once (or fails the first ``fail_first`` sends)."""

    def __init__(self, broker: FakeBroker | None = None, fail_first: int = 0) -> None:
        self.broker = broker or FakeBroker()
        self.sent: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
        self.fail_first = fail_first

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail_first:
            self.fail_first -= 1
            from aiokafka.errors import KafkaTimeoutError  # noqa: PLC0415

            future.set_exception(KafkaTimeoutError())
            return future
        self.sent.append((topic, key, value, list(headers or [])))
        partition = 0
        record = self.broker.add(topic, partition, 0, value, headers or [], key)
        future.set_result(record)
        return future


class FakeChainedIds:
    def __init__(self, chained: Collection[str] = ()) -> None:
        self.chained = set(chained)
        self.queries = 0

    async def existing(self, event_ids: Collection[str]) -> set[str]:
        self.queries += 1
        return self.chained & set(event_ids)
