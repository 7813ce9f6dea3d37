"""Small pieces the workers are built from: steps with explicit submit, poll and join, and the commit step
that always comes last.

Each worker is a chain ``consume -> step -> ... -> commit``. A step that is full raises ``MessageRejected``
from ``submit`` instead of waiting: the caller decides what to do meanwhile (poll, pause its partitions) and
submits again once ``poll`` has made room (auditctl's produce step). The consumers bound their in-flight work
the same way before they take the next message, and commit only what the next stage acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Protocol

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import Histogram

from shared.messages import dead_letter


class MessageRejected(Exception):
    """The step is full; try again after the next poll. This is backpressure, not an error."""


@dataclass(frozen=True)
class Position:
    """Everything before ``next_offset`` in the partition is done downstream."""

    partition: TopicPartition
    next_offset: int


class OffsetCommitter(Protocol):
    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None: ...


class CommitOffsets:
    """The last step: commits, in order and at most every ``interval`` seconds, what earlier steps finished."""

    def __init__(self, consumer: OffsetCommitter, interval: float = 1.0, latency: Histogram | None = None) -> None:
        self._consumer = consumer
        self._interval = interval
        self._latency = latency
        self._pending: dict[TopicPartition, int] = {}
        self._last_commit = time.monotonic()
        self.committed: dict[TopicPartition, int] = {}

    async def submit(self, item: Position) -> None:
        previous = self._pending.get(item.partition, self.committed.get(item.partition, -1))
        if item.next_offset < previous:
            raise AssertionError(f"offsets out of order on {item.partition}: {item.next_offset} < {previous}")
        self._pending[item.partition] = item.next_offset

    def forget(self, partitions: set[TopicPartition]) -> None:
        """After a revocation the new owner commits; committing stale offsets would move it backwards."""
        for tp in partitions:
            self._pending.pop(tp, None)
            self.committed.pop(tp, None)

    async def poll(self) -> None:
        if self._pending and time.monotonic() - self._last_commit >= self._interval:
            await self._flush()

    async def join(self, timeout: float | None = None) -> None:
        if self._pending:
            await asyncio.wait_for(self._flush(), timeout)

    async def _flush(self) -> None:
        offsets = dict(self._pending)
        started = time.perf_counter()
        await self._consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in offsets.items()})
        if self._latency is not None:
            self._latency.observe(time.perf_counter() - started)
        self.committed.update(offsets)
        for tp, off in offsets.items():
            if self._pending.get(tp) == off:
                del self._pending[tp]
        self._last_commit = time.monotonic()


class Backoff:
    """Exponential backoff with full jitter, for retryable errors."""

    def __init__(self, initial: float = 0.2, maximum: float = 10.0, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2**self._attempt))
        self._attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0

    async def sleep(self, stop: asyncio.Event | None = None) -> None:
        delay = self.next_delay()
        if stop is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


# Defined with the message it belongs to; kept importable here for the workers.
dead_letter_headers = dead_letter.encode_headers


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
