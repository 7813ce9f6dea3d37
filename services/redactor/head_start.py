"""A restarted redactor's head start: the raw backlog transformed while the group has not yet assigned partitions.

A redactor restarted after a crash waits for its consumer group to hand it partitions before it may fetch: on
Apache Kafka a returning static member gets its own back at once, a dynamic one waits for the rebalance its
return starts (up to ``KAFKA_REBALANCE_TIMEOUT_MS`` for the dead member), and some brokers hold every join for
seconds. All that while its partitions' backlog grows, and once assigned it has to transform that backlog before
any event queued behind it gets through. The head start does the transforming during the wait, so that the wait is
not spent idle: a second consumer, which names the group only to read its committed offsets (it is assigned by
hand, and never joins, commits or takes a partition from anyone), reads every partition of the raw topic from the
group's committed offset and transforms what it finds under the same engines, postures and keys, holding the
outputs (at most ``max_bytes`` of canonical events transformed). A partition the group never committed on is left
alone, and so is one whose committed offset moves meanwhile (another instance works on it).

Nothing is produced and nothing is committed before the group has assigned a partition. Then, for each assigned
partition whose committed offset is still where the head start began reading it, the outputs are handed to the
producer exactly as if the worker had just transformed those messages, and the group consumer continues after
them; the offsets are committed only once the broker has acknowledged them, as always. Outputs of a partition this
instance was not given, or whose committed offset moved meanwhile (another instance worked on it), are dropped.
The head start stops at the assignment, when its byte budget is spent, or at shutdown; a failure only ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import TopicPartition

from shared.canonicalize.transform import TransformStats
from shared.kafka import OutboundRecord
from shared.pipeline import Position

log = logging.getLogger("redactor")

_FETCH_WAIT_MS = 100
# How often the group's committed offsets are read again: a partition whose offset moves is being worked on by another
# instance, and transforming it ahead would be wasted.
_COMMITTED_CHECK_S = 0.5


class Transform(Protocol):
    """What the head start needs of the worker's transform step (services.redactor.worker.TransformStep)."""

    stats: TransformStats

    async def submit(self, message: Any) -> None: ...


@dataclass
class Prepared:
    """One raw message, transformed ahead: its outputs and the transform statistics it added (for the metrics)."""

    position: Position
    outputs: list[OutboundRecord]
    before: TransformStats
    after: TransformStats


def _snapshot(stats: TransformStats) -> TransformStats:
    return TransformStats(stats.records_in, stats.events_out, stats.dropped_other, stats.other_kept,
                          stats.withheld_fields, dict(stats.redactions))


@dataclass
class Keep:
    """The next step of the head start's transform: keeps each raw message's outputs rather than producing them."""

    transform: Transform | None = None
    kept: dict[TopicPartition, list[Prepared]] = field(default_factory=dict)
    bytes_kept: int = 0
    _last: TransformStats = field(default_factory=TransformStats)

    async def submit(self, item: tuple[Position, list[OutboundRecord]]) -> None:
        position, outputs = item
        after = _snapshot(self.transform.stats if self.transform is not None else TransformStats())
        self.kept.setdefault(position.partition, []).append(Prepared(position, outputs, self._last, after))
        self._last = after
        self.bytes_kept += sum(len(record.value) for record in outputs)

    async def poll(self) -> None:
        return None

    async def join(self, timeout: float | None = None) -> None:
        return None


class HeadStart:
    """Reads and transforms ``raw_topic`` from the group's committed offsets until ``finish`` (the assignment)."""

    def __init__(self, consumer: Any, make_transform: Callable[[Keep], Transform], raw_topic: str,
                 max_bytes: int) -> None:
        self._consumer = consumer  # a group consumer (for the committed offsets) that is only ever assigned by hand
        self._raw_topic = raw_topic
        self._max_bytes = max_bytes
        self._keep = Keep()
        self._transform = self._keep.transform = make_transform(self._keep)
        self._starts: dict[TopicPartition, int] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.messages = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        started = False
        try:
            await self._consumer.start()
            started = True
            if await self._assign_from_committed():
                await self._transform_ahead()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an optimisation only: whatever went wrong, the worker does the work itself
            log.warning("head start ended early", extra={"error": repr(exc)})
            self._keep.kept.clear()
        finally:
            if started:
                with contextlib.suppress(Exception):
                    await self._consumer.stop()

    async def _assign_from_committed(self) -> bool:
        await self._consumer.topics()  # the topic's partitions, from a metadata request
        for partition in sorted(self._consumer.partitions_for_topic(self._raw_topic) or ()):
            # Where the group consumer will start too. A partition the group never committed on is left alone:
            # where that starts is the reset policy's, and nothing read there would be taken over.
            tp = TopicPartition(self._raw_topic, partition)
            committed = await self._consumer.committed(tp)
            if committed is not None:
                self._starts[tp] = committed
        self._consumer.assign(list(self._starts))
        for tp, offset in self._starts.items():
            self._consumer.seek(tp, offset)
        return bool(self._starts)

    async def _transform_ahead(self) -> None:
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while not self._stop.is_set() and self._keep.bytes_kept < self._max_bytes:
            if loop.time() - checked >= _COMMITTED_CHECK_S:
                await self._leave_what_others_work_on()
                checked = loop.time()
            batches = await self._consumer.getmany(timeout_ms=_FETCH_WAIT_MS, max_records=50)
            for messages in batches.values():
                for message in messages:
                    if self._stop.is_set() or self._keep.bytes_kept >= self._max_bytes:
                        return
                    await self._transform.submit(message)
                    self.messages += 1
                    # The group consumer's join and heartbeats run on this loop too: one raw message at a time.
                    await asyncio.sleep(0)

    async def _leave_what_others_work_on(self) -> None:
        for tp, start in list(self._starts.items()):
            if await self._consumer.committed(tp) != start:
                # Another instance commits here: it has the partition, and what is transformed ahead would be dropped.
                self._consumer.pause(tp)
                self._keep.kept.pop(tp, None)
                del self._starts[tp]

    async def finish(self) -> None:
        """Stops reading and transforming (the group has assigned partitions, or the service stops)."""
        self._stop.set()
        if self._task is not None:
            # At once, not after the fetch it may be waiting for: a transformed message is kept in one step (no await
            # between its transform and its keeping), so a cancel leaves whole messages only.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def take(self, tp: TopicPartition, committed: int | None) -> list[Prepared]:
        """The outputs prepared for ``tp``, in offset order, if the group's committed offset ``committed`` is where
        they start; none otherwise (they are dropped either way)."""
        kept = self._keep.kept.pop(tp, [])
        if committed is None or self._starts.get(tp) != committed:
            return []
        return kept

    def drop(self) -> None:
        self._keep.kept.clear()
