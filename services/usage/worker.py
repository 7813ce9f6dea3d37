"""The metrics consumer: raw metric batches -> usage rows in PostgreSQL -> Kafka offsets.

Offsets are committed only after the transaction holding the batch's points has committed, so a crash
anywhere redelivers the batch, and the idempotent write makes the redelivery harmless. One batch is held
at a time (``max_batch`` messages), so memory is bounded whatever the lag.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.usage.points import DecodeStats, decode_points, redacted_point
from services.usage.store import TenantPoints, WriteStats, write_points
from shared import otlp
from shared.db.errors import is_retryable_db_error
from shared.kafka import MessageProducer, send_until_acknowledged
from shared.messages import InvalidMessage, raw_batch
from shared.messages.auth import Keyring
from shared.pii.attributes import TextRedactor
from shared.pipeline import Backoff, dead_letter_headers, describe

log = logging.getLogger("usage")


class UsageMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter("usage_messages", "Raw metric messages processed.", registry=registry)
        self.points = Counter("usage_points", "Usage data points decoded.", registry=registry)
        self.duplicates = Counter("usage_duplicate_points", "Points already stored (redelivery).",
                                  registry=registry)
        self.skipped = Counter("usage_skipped_metrics", "Metrics that are not usage counters.", registry=registry)
        self.dead_lettered = Counter("usage_dead_lettered", "Messages sent to the dead-letter topic.",
                                     registry=registry)
        self.db_retries = Counter("usage_db_retries", "Retryable PostgreSQL failures.", registry=registry)
        self.lag = Gauge("usage_consumer_lag", "Messages behind the partition end.", ["partition"], registry=registry)


class PermanentMessageError(Exception):
    """A raw message that can never become usage: missing licence headers or an undecodable body."""


@dataclass(frozen=True)
class Decoded:
    message: Any
    points: TenantPoints | None
    error: str | None = None


def decode_message(message: Any, stats: DecodeStats, keyring: Keyring,
                   engine: TextRedactor | None = None) -> TenantPoints:
    """The points of one authenticated raw metric batch, their attributes redacted like log content (fail
    closed: with no engine, every attribute value is withheld); ``PermanentMessageError`` for anything else."""
    try:
        batch = raw_batch.decode(message.value, message.headers, keyring, "metrics")
    except InvalidMessage as exc:
        raise PermanentMessageError(str(exc)) from None
    try:
        points = [redacted_point(engine, point) for point in decode_points(batch.payload, batch.content_type, stats)]
    except otlp.PayloadError as exc:  # its message names the kind and position of the fault, never the text
        raise PermanentMessageError(str(exc)) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise PermanentMessageError(f"metric batch cannot be read ({type(exc).__name__})") from None
    return TenantPoints(batch.tenant, batch.org, points)


class _MarkAssigned(ConsumerRebalanceListener):  # type: ignore[misc]
    """Offsets are committed per batch, so a revocation needs no flush; an assignment makes the worker ready."""

    def __init__(self, worker: UsageWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # Called after every join, with an empty set too when the group has more members than partitions.
        self._worker.assigned = True


class UsageWorker:
    def __init__(self, consumer: Any, producer: MessageProducer, pool: asyncpg.Pool, *, topic: str,
                 dead_letter_topic: str, max_batch: int, metrics: UsageMetrics, stop: asyncio.Event,
                 engine: TextRedactor | None, raw_keyring: Keyring) -> None:
        self.engine = engine
        self.consumer = consumer
        self.raw_keyring = raw_keyring
        self.producer = producer
        self.pool = pool
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self.max_batch = max_batch
        self.metrics = metrics
        self._stop = stop
        self.assigned = False  # set once the group has given this member its partitions (readiness)

    def subscribe(self) -> None:
        self.consumer.subscribe([self.topic], listener=_MarkAssigned(self))

    async def run(self) -> None:
        while not self._stop.is_set():
            batches = await self.consumer.getmany(timeout_ms=500, max_records=self.max_batch)
            messages = [m for partition in batches.values() for m in partition]
            if messages:
                if not await self.process(messages):
                    return  # stopping in the middle of retries: nothing committed, the batch comes again
                await self._commit(batches)
            await self._update_lag()

    async def process(self, messages: Sequence[Any]) -> bool:
        """Decode, dead-letter what can never be used, write the rest; False if stopped before the write."""
        stats = DecodeStats()
        decoded: list[Decoded] = []
        for message in messages:
            try:
                decoded.append(Decoded(message, decode_message(message, stats, self.raw_keyring, self.engine)))
            except PermanentMessageError as exc:
                decoded.append(Decoded(message, None, str(exc)))
        self.metrics.points.inc(stats.points)
        self.metrics.skipped.inc(stats.skipped_metrics)
        for item in decoded:
            if item.error is not None:
                await self._dead_letter(item.message, item.error)
        usable = [item for item in decoded if item.points is not None]
        if usable and not await self._write(usable):
            return False
        self.metrics.messages.inc(len(messages))
        return True

    async def _write(self, items: list[Decoded]) -> bool:
        backoff = Backoff()
        while True:
            try:
                async with self.pool.acquire() as conn:
                    result: WriteStats = await write_points(conn, [i.points for i in items if i.points])
                self.metrics.duplicates.inc(result.duplicates)
                return True
            except Exception as exc:
                if is_retryable_db_error(exc):
                    if self._stop.is_set():
                        return False
                    self.metrics.db_retries.inc()
                    log.warning("database unavailable, retrying", extra={"error": describe(exc)})
                    await backoff.sleep(self._stop)
                    continue
                if len(items) > 1:
                    # Permanent: find the message responsible by writing one at a time.
                    for item in items:
                        if not await self._write([item]):
                            return False
                    return True
                log.error("metric batch cannot be stored, dead-lettering", extra={"error": describe(exc)})
                await self._dead_letter(items[0].message, describe(exc))
                return True

    async def _commit(self, batches: dict[TopicPartition, list[Any]]) -> None:
        offsets = {tp: OffsetAndMetadata(messages[-1].offset + 1, "") for tp, messages in batches.items() if messages}
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions: the new owner re-reads from the last commit, and the
            # idempotent write makes that harmless.
            log.warning("offset commit failed", extra={"error": describe(exc)})

    async def _dead_letter(self, message: Any, error: str) -> None:
        self.metrics.dead_lettered.inc()
        log.error("raw metric batch dead-lettered",
                  extra={"partition": message.partition, "offset": message.offset, "error": error})
        original = message.headers if isinstance(message.headers, list | tuple) else []
        headers = dead_letter_headers(message.topic, message.partition, message.offset, error, "usage",
                                      [(k, v) for k, v in original if isinstance(k, str) and isinstance(v, bytes)])
        value = message.value if isinstance(message.value, bytes) else b""
        await send_until_acknowledged(self.producer, self.dead_letter_topic, value, key=message.key,
                                      headers=headers, stop=self._stop)

    async def _update_lag(self) -> None:
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                position = await self.consumer.position(tp)
                self.metrics.lag.labels(partition=str(tp.partition)).set(max(0, highwater - position))
