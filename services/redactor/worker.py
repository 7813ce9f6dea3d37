"""The redactor worker: consume raw batches -> transform -> produce canonical events -> commit offsets.

Raw offsets are committed only after every canonical event (or dead letter) made from them has been
acknowledged by the broker, and in offset order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.canonicalize.transform import (
    BatchRejected,
    EngineLookup,
    TransformPolicy,
    TransformStats,
    transform_batch,
)
from shared.kafka import BatchSender, OutboundRecord
from shared.messages import InvalidMessage, canonical_event, raw_batch
from shared.messages.auth import Keyring, MessageKey
from shared.pipeline import Backoff, CommitOffsets, Position, dead_letter_headers

if TYPE_CHECKING:
    from services.redactor.head_start import HeadStart

log = logging.getLogger("redactor")
# How often acknowledged raw offsets are committed. After a crash everything since the last commit is transformed
# and produced again (the signer drops the repeats by event id), ahead of the backlog the crash left: at 1,500
# events/s a 1 s interval redid up to about 2,000 events. A commit is one small request to the group coordinator.
_COMMIT_INTERVAL_S = 0.2


# One message to produce; a tuple, as one is made per canonical event.
OutboundMessage = OutboundRecord


@dataclass
class _InFlight:
    position: Position
    messages: list[OutboundMessage]
    acknowledged: asyncio.Future[None]
    sent_at: float = 0.0


class RedactorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.records_in = Counter("redactor_records_in", "Log records read from raw batches.", registry=registry)
        self.events_out = Counter("redactor_events_out", "Canonical events produced.", registry=registry)
        self.redactions = Counter("redactor_redactions", "Entities masked, by type.", ["entity"], registry=registry)
        self.withheld = Counter("redactor_withheld_fields", "Content fields withheld (fail closed).", registry=registry)
        self.dead_lettered = Counter(
            "redactor_dead_lettered", "Raw messages sent to the dead-letter topic.", registry=registry
        )
        self.dropped_other = Counter(
            "redactor_dropped_other_events", "Events dropped by the other-event policy.", registry=registry
        )
        self.other_kept = Counter(
            "redactor_other_events_kept", "Undocumented events kept by policy.", registry=registry
        )
        self.lag = Gauge(
            "redactor_consumer_lag", "Messages behind the partition end.", ["topic", "partition"], registry=registry
        )
        self.produce_latency = Histogram(
            "redactor_produce_duration_seconds",
            "From sending a raw message's outputs to the broker acknowledging all of them.",
            registry=registry,
        )
        self.commit_latency = Histogram(
            "redactor_commit_duration_seconds", "One Kafka offset commit.", registry=registry
        )

    def record(self, before: TransformStats, after: TransformStats) -> None:
        self.records_in.inc(after.records_in - before.records_in)
        self.events_out.inc(after.events_out - before.events_out)
        self.withheld.inc(after.withheld_fields - before.withheld_fields)
        self.dropped_other.inc(after.dropped_other - before.dropped_other)
        self.other_kept.inc(after.other_kept - before.other_kept)
        for kind, n in after.redactions.items():
            delta = n - before.redactions.get(kind, 0)
            if delta:
                self.redactions.labels(entity=kind).inc(delta)


class ProduceStep:
    """Sends a raw message's outputs together and forwards its position once all of them are acknowledged."""

    def __init__(
        self, producer: BatchSender, next_step: CommitOffsets, max_pending: int, latency: Histogram | None = None
    ) -> None:
        self._latency = latency
        self._producer = producer
        self._next = next_step
        self._max_pending = max_pending
        self._pending: deque[_InFlight] = deque()
        self._backoff = Backoff()

    @property
    def full(self) -> bool:
        return len(self._pending) >= self._max_pending

    async def submit(self, item: tuple[Position, list[OutboundMessage]]) -> None:
        while self.full:
            # The consumer is paused by now; wait for the oldest send rather than grow the queue.
            await asyncio.wait([self._pending[0].acknowledged])
            await self.poll()
        position, messages = item
        sent_at = time.perf_counter()
        self._pending.append(_InFlight(position, messages, await self._producer.send_many(messages), sent_at))
        # Handing records over never blocks: yield once, so the producer sends them while the next raw
        # message of a large fetch is transformed rather than after the whole fetch.
        await asyncio.sleep(0)

    async def poll(self) -> None:
        while self._pending and self._pending[0].acknowledged.done():
            head = self._pending[0]
            if head.acknowledged.cancelled() or head.acknowledged.exception() is not None:
                # Retryable by nature (the broker is away or slow): resend, never skip. Anything the broker
                # did take is deduplicated downstream by event id.
                log.warning("produce failed, resending", extra={"count": len(head.messages)})
                await asyncio.sleep(self._backoff.next_delay())
                head.acknowledged = await self._producer.send_many(head.messages)
                return
            self._backoff.reset()
            self._pending.popleft()
            if self._latency is not None:
                self._latency.observe(time.perf_counter() - head.sent_at)
            await self._next.submit(head.position)

    async def join(self, timeout: float | None = None) -> None:
        async def drain() -> None:
            while self._pending:
                await asyncio.wait([self._pending[0].acknowledged])
                await self.poll()

        await asyncio.wait_for(drain(), timeout)

    def forget(self, partitions: set[TopicPartition]) -> None:
        self._pending = deque(e for e in self._pending if e.position.partition not in partitions)


class OutputStep(Protocol):
    """Where the transform step hands each raw message's outputs: the produce step (or the head start's keeper)."""

    async def submit(self, item: tuple[Position, list[OutboundMessage]]) -> None: ...

    async def poll(self) -> None: ...

    async def join(self, timeout: float | None = None) -> None: ...


# A Kafka record batch's header (61 bytes) and one record's varint framing, rounded up.
_RECORD_OVERHEAD_BYTES = 128
# A canonical message's key (the tenant) and headers (event id, request id, key id, MAC) are short and checked
# (under 1 KiB together): an event whose value is this far under the limit is under it, without adding them up.
_KEY_AND_HEADERS_HEADROOM = 4096


def _record_bytes(record: OutboundMessage) -> int:
    """About what the broker counts against its message limit for this record alone in a batch."""
    headers = sum(len(name.encode()) + len(value) for name, value in record.headers)
    return _RECORD_OVERHEAD_BYTES + len(record.key or b"") + len(record.value) + headers


class TransformStep:
    """Decode, authenticate, map and redact one raw message; a permanent failure becomes a dead letter."""

    def __init__(
        self,
        engines: EngineLookup,
        policy: TransformPolicy,
        canonical_topic: str,
        dead_letter_topic: str,
        next_step: OutputStep,
        metrics: RedactorMetrics,
        *,
        raw_keyring: Keyring,
        canonical_key: MessageKey,
        max_message_bytes: int,
    ) -> None:
        self._engines = engines
        self._max_message_bytes = max_message_bytes
        self._policy = policy
        self._canonical_topic = canonical_topic
        self._dead_letter_topic = dead_letter_topic
        self._next = next_step
        self._metrics = metrics
        self._raw_keyring = raw_keyring
        self._canonical_key = canonical_key
        self.stats = TransformStats()

    async def submit(self, message: Any) -> None:
        tp = TopicPartition(message.topic, message.partition)
        before = TransformStats(
            self.stats.records_in,
            self.stats.events_out,
            self.stats.dropped_other,
            self.stats.other_kept,
            self.stats.withheld_fields,
            dict(self.stats.redactions),
        )
        batch: raw_batch.RawBatch | None = None
        try:
            batch = raw_batch.decode(message.value, message.headers, self._raw_keyring, "logs")
            outputs = [
                OutboundMessage(self._canonical_topic, *canonical_event.encode(event, self._canonical_key,
                                                                               batch.request_id))
                for event in transform_batch(batch, self._engines, self._policy, self.stats)
            ]
            largest = max([len(output.value) for output in outputs], default=0)
            if largest + _KEY_AND_HEADERS_HEADROOM > self._max_message_bytes:
                largest = max(map(_record_bytes, outputs))
            if largest > self._max_message_bytes:
                # Permanent: the broker would refuse this event on every retry and hold the partition up behind it.
                raise BatchRejected(f"a canonical event of about {largest} bytes exceeds the {self._max_message_bytes}"
                                    "-byte message limit")
        except (InvalidMessage, BatchRejected) as exc:
            outputs = [self._dead_letter(message, str(exc))]
        except Exception as exc:  # whatever the bytes, the partition must move on
            # Not expected for any input; the type is enough to find it, and a message could quote content.
            outputs = [self._dead_letter(message, f"unexpected {type(exc).__name__} while transforming")]
        self._metrics.record(before, self.stats)
        if log.isEnabledFor(logging.DEBUG) and batch is not None:
            log.debug(
                "raw batch transformed",
                extra={
                    "request_id": batch.request_id,
                    "tenant": batch.tenant,
                    "partition": message.partition,
                    "offset": message.offset,
                    "events_out": self.stats.events_out - before.events_out,
                    "withheld": self.stats.withheld_fields - before.withheld_fields,
                    "redactions": {
                        k: n - before.redactions.get(k, 0)
                        for k, n in self.stats.redactions.items()
                        if n != before.redactions.get(k, 0)
                    },
                },
            )
        await self._next.submit((Position(tp, message.offset + 1), outputs))

    def _dead_letter(self, message: Any, reason: str) -> OutboundMessage:
        self._metrics.dead_lettered.inc()
        # Only our own field names in ``extra``: the message's header names are the sender's to choose.
        log.error("raw batch dead-lettered",
                  extra={"partition": message.partition, "offset": message.offset, "error": reason})
        original = message.headers if isinstance(message.headers, list | tuple) else []
        return OutboundMessage(
            self._dead_letter_topic,
            message.key if isinstance(message.key, bytes) else None,
            message.value if isinstance(message.value, bytes) else b"",
            dead_letter_headers(message.topic, message.partition, message.offset, reason, "redactor",
                                [(k, v) for k, v in original if isinstance(k, str) and isinstance(v, bytes)]),
        )

    async def poll(self) -> None:
        await self._next.poll()

    async def join(self, timeout: float | None = None) -> None:
        await self._next.join(timeout)


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: RedactorWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Finish and commit what we hold for these partitions before another instance takes them over.
        try:
            await self._worker.produce.join(30)
            await self._worker.commit.join(10)
        except (TimeoutError, KafkaError) as exc:
            log.warning("could not flush before rebalance", extra={"error": repr(exc)})
            self._worker.produce.forget(set(revoked))
            self._worker.commit.forget(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # Called after every join, with an empty set too when the group has more members than partitions:
        # from here on the worker is a member of a stable group and its loop can process (readiness).
        if self._worker.head_start is not None:
            # Nothing is fetched from these partitions before the run loop has handed over what the head start
            # transformed ahead for them and moved past it.
            self._worker.consumer.pause(*assigned)
            self._worker.head_start_for = set(assigned)
        self._worker.assigned = True
        log.info("partitions assigned", extra={"partitions": sorted(str(tp) for tp in assigned)})


class RedactorWorker:
    def __init__(
        self,
        consumer: Any,
        producer: BatchSender,
        engines: EngineLookup,
        policy: TransformPolicy,
        *,
        raw_topic: str,
        canonical_topic: str,
        dead_letter_topic: str,
        max_pending: int,
        metrics: RedactorMetrics,
        raw_keyring: Keyring,
        canonical_key: MessageKey,
        max_message_bytes: int,
    ) -> None:
        self.consumer = consumer
        self.raw_topic = raw_topic
        self.metrics = metrics
        self.commit = CommitOffsets(consumer, interval=_COMMIT_INTERVAL_S, latency=metrics.commit_latency)
        self.produce = ProduceStep(producer, self.commit, max_pending, latency=metrics.produce_latency)
        self.transform = TransformStep(engines, policy, canonical_topic, dead_letter_topic, self.produce, metrics,
                                       raw_keyring=raw_keyring, canonical_key=canonical_key,
                                       max_message_bytes=max_message_bytes)
        self._paused = False
        self.assigned = False  # set once the group has given this member its partitions (readiness)
        self.dead_letter_topic = dead_letter_topic
        # Set before the first assignment, for a restart (services/redactor/head_start.py); its outputs for the
        # partitions the group assigns (head_start_for) are handed over by the run loop, then it is dropped.
        self.head_start: HeadStart | None = None
        self.head_start_for: set[TopicPartition] | None = None

    def subscribe(self) -> None:
        self.consumer.subscribe([self.raw_topic], listener=_FlushOnRevoke(self))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.head_start_for is not None:
                await self._take_over_head_start()
            await self._apply_backpressure()
            # Until the head start is handed over, the assignment is looked for often: it is the moment a backlog
            # transformed ahead goes out.
            batches = await self.consumer.getmany(timeout_ms=200 if self.head_start is None else 20, max_records=200)
            for messages in batches.values():
                for message in messages:
                    await self.transform.submit(message)
                    # A large fetch (a backlog) takes seconds to work through: what the broker has acknowledged
                    # is committed as it comes, not once the whole fetch is done, so a crash meanwhile redoes little.
                    await self.transform.poll()
                    await self.commit.poll()
            await self.transform.poll()
            await self.commit.poll()
            await self._update_lag()
        if self.head_start is not None:
            await self.head_start.finish()
        await self.transform.join(60)
        await self.commit.join(10)

    async def _take_over_head_start(self) -> None:
        """Hands the producer what the head start transformed for the assigned partitions, as if just transformed,
        and moves the consumer past it; then resumes the partitions (paused since the assignment)."""
        assert self.head_start is not None and self.head_start_for is not None
        head_start, assigned = self.head_start, self.head_start_for
        self.head_start = self.head_start_for = None
        await head_start.finish()
        taken = 0
        try:
            partitions = sorted(assigned)
            offsets = await asyncio.gather(*(self.consumer.committed(tp) for tp in partitions), return_exceptions=True)
            for tp, committed in zip(partitions, offsets, strict=True):
                if isinstance(committed, BaseException):
                    log.warning("head start dropped for a partition", extra={"partition": str(tp),
                                                                              "error": repr(committed)})
                    continue
                prepared = head_start.take(tp, committed)
                if not prepared or tp not in self.consumer.assignment():
                    continue
                self.consumer.seek(tp, prepared[-1].position.next_offset)
                for item in prepared:
                    self.metrics.record(item.before, item.after)
                    dead_letters = sum(1 for record in item.outputs if record.topic == self.dead_letter_topic)
                    if dead_letters:
                        self.metrics.dead_lettered.inc(dead_letters)
                    await self.produce.submit((item.position, item.outputs))
                    taken += 1
        finally:
            head_start.drop()
            self.consumer.resume(*(assigned & self.consumer.assignment()))
        log.info("head start taken over", extra={"raw_messages": taken, "transformed_ahead": head_start.messages})

    async def _apply_backpressure(self) -> None:
        if self.produce.full and not self._paused:
            self.consumer.pause(*self.consumer.assignment())
            self._paused = True
        elif self._paused and not self.produce.full:
            self.consumer.resume(*self.consumer.assignment())
            self._paused = False
        if self._paused:
            await self.transform.poll()
            await asyncio.sleep(0.005)

    async def _update_lag(self) -> None:
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            position = await self.consumer.position(tp)
            self.metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(max(0, highwater - position))
