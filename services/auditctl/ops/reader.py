"""Reading bounded offset ranges of a topic, outside any consumer group.

Operator tools must never join the services' consumer groups: a replay that joined the redactor's group
would trigger a rebalance and take partitions away from it. This reader assigns partitions by hand and
commits nothing.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka import KafkaConnection, as_connection, make_admin


@dataclass(frozen=True)
class Record:
    """One Kafka message as the tools see it; headers stay bytes until someone decodes them."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_consumer(cls, message: Any) -> Record:
        return cls(
            message.topic,
            message.partition,
            message.offset,
            message.timestamp,
            message.key,
            message.value if message.value is not None else b"",
            tuple(message.headers or ()),
        )

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True)
class TimestampAnswer:
    """The broker's answer to offsets-for-times for one partition (None in Kafka: no such message)."""

    offset: int
    timestamp_ms: int


class OffsetSource(Protocol):
    """What the window resolution needs from the broker; a fake stands in for it in unit tests."""

    async def partitions(self, topic: str) -> list[int]: ...

    async def bounds(self, topic: str, partitions: Iterable[int]) -> dict[int, tuple[int, int]]: ...

    async def offsets_for_time(self, topic: str, partitions: Iterable[int], ts_ms: int) -> dict[
        int, TimestampAnswer | None]: ...

    async def first_at_or_after(self, topic: str, partition: int, offset: int, end: int) -> Record | None: ...


class RangeReader(Protocol):
    def read_range(self, topic: str, partition: int, start: int, end: int, *,
                   max_records: int | None = None) -> AsyncIterator[Record]: ...


class TopicSource(OffsetSource, RangeReader, Protocol):
    """Everything the tools read from the broker: TopicReader, or an in-memory fake in unit tests."""


class TopicReader:
    """An unassigned, group-less consumer used for offset queries and range reads."""

    def __init__(self, kafka: KafkaConnection | str, *, fetch_timeout_ms: int = 1_000, stall_timeout: float = 60.0,
                 **overrides: Any) -> None:
        options: dict[str, Any] = {
            **as_connection(kafka).options(),
            "group_id": None,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_partition_fetch_bytes": 4 * 1024 * 1024,
            "fetch_max_bytes": 16 * 1024 * 1024,
            "request_timeout_ms": 30_000,
        }
        options.update(overrides)
        self._consumer = AIOKafkaConsumer(**options)
        self._admin = make_admin(kafka, request_timeout_ms=options["request_timeout_ms"])
        self._fetch_timeout_ms = fetch_timeout_ms
        self._stall_timeout = stall_timeout

    async def start(self) -> None:
        try:
            await self._consumer.start()
            await self._admin.start()
        except BaseException:
            await self.stop()  # a half-started client would leak its connections
            raise

    async def stop(self) -> None:
        await self._admin.close()
        await self._consumer.stop()

    async def __aenter__(self) -> TopicReader:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def partitions(self, topic: str) -> list[int]:
        # Asked of the cluster each time: once partitions are assigned, the consumer's own metadata covers
        # only the assigned topics.
        if topic not in set(await self._admin.list_topics()):
            raise LookupError(f"topic {topic!r} does not exist")  # describing it would retry for a while
        described = await self._admin.describe_topics([topic])
        found = [p["partition"] for t in described if t["topic"] == topic and not t["error_code"]
                 for p in t["partitions"]]
        if not found:
            raise LookupError(f"topic {topic!r} does not exist or has no partitions")
        return sorted(found)

    async def bounds(self, topic: str, partitions: Iterable[int]) -> dict[int, tuple[int, int]]:
        """``{partition: (first retained offset, end offset)}``; the end is the next offset to be written."""
        tps = [TopicPartition(topic, p) for p in partitions]
        begin = await self._consumer.beginning_offsets(tps)
        end = await self._consumer.end_offsets(tps)
        return {tp.partition: (begin[tp], end[tp]) for tp in tps}

    async def offsets_for_time(self, topic: str, partitions: Iterable[int], ts_ms: int) -> dict[
            int, TimestampAnswer | None]:
        answers: Mapping[TopicPartition, Any] = await self._consumer.offsets_for_times(
            {TopicPartition(topic, p): ts_ms for p in partitions})
        return {
            tp.partition: None if answer is None else TimestampAnswer(answer.offset, answer.timestamp)
            for tp, answer in answers.items()
        }

    async def first_at_or_after(self, topic: str, partition: int, offset: int, end: int) -> Record | None:
        """The first message at or after ``offset`` (compaction and transaction markers leave holes)."""
        async for record in self.read_range(topic, partition, offset, end, max_records=1):
            return record
        return None

    async def read_range(self, topic: str, partition: int, start: int, end: int, *,
                         max_records: int | None = None) -> AsyncIterator[Record]:
        """Messages with ``start <= offset < end``, in order. Stops at ``end`` even if more arrive later, so
        a replay never reads back what it re-produced itself."""
        if start >= end:
            return
        tp = TopicPartition(topic, partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, start)
        yielded = 0
        last_progress = time.monotonic()
        while True:
            batch = await self._consumer.getmany(tp, timeout_ms=self._fetch_timeout_ms, max_records=500)
            messages = batch.get(tp, [])
            if not messages:
                # Nothing fetched: either the range's tail was removed (retention, compaction) or the fetch
                # timed out. The position tells which; a position at or past the end means we are done.
                if await self._consumer.position(tp) >= end:
                    return
                if time.monotonic() - last_progress > self._stall_timeout:
                    raise TimeoutError(f"no message from {topic}[{partition}] for {self._stall_timeout}s")
                continue
            last_progress = time.monotonic()
            for message in messages:
                if message.offset >= end:
                    return
                yield Record.from_consumer(message)
                yielded += 1
                if max_records is not None and yielded >= max_records:
                    return
            if messages[-1].offset + 1 >= end:
                return
