"""The signer worker: decode -> prepare (hash, sign) -> append to chains with offsets -> commit offsets.

PostgreSQL holds the authoritative offsets; on assignment the consumer seeks to them, so a replay of the
topic or a restart changes nothing. The Kafka commit afterwards only serves lag monitoring.

The append of one batch and the preparation of the next overlap: the next batch is hashed and signed from
the heads the previous one leaves, while PostgreSQL writes it. At most one append is in flight. When an
append finds the chain elsewhere than expected, it chains under lock instead and the prepared state is
dropped; the batch prepared meanwhile is prepared again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiokafka import ConsumerRebalanceListener, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.signer.appender import (
    AppendResult,
    CheckpointPolicy,
    Head,
    OffsetEvent,
    OffsetGap,
    PreparedBatch,
    append_batch,
    append_prepared,
    checkpoint_idle_chains,
    prepare,
    stored_offsets,
)
from services.signer.rows import ChainRow, decode_row
from services.signer.signing import BatchSigner, SigningHelperError
from shared.db.errors import is_retryable_db_error
from shared.kafka import MessageProducer, send_until_acknowledged
from shared.keys import Signer
from shared.messages import InvalidMessage, canonical_event
from shared.messages.auth import Keyring
from shared.pipeline import Backoff, CommitOffsets, Position, dead_letter_headers, describe

log = logging.getLogger("signer")
# Messages decoded between two turns of the event loop (about as long as the appender's hashing chunks).
_DECODE_CHUNK = 16


def decode_authenticated_row(message: Any, keyring: Keyring) -> ChainRow:
    """The row of one canonical message whose authentication holds and whose event id matches its header.

    The tenant the row is chained to is the ``tenant_id`` of that authenticated value: only a producer
    holding an accepted key can add to a chain, and only events of the planes and types its key may sign.
    """
    envelope = canonical_event.decode(message.value, message.headers, keyring)
    row = decode_row(envelope.value)
    if row.event_id != envelope.event_id:
        raise InvalidMessage("canonical event's event_id differs from its authenticated header")
    envelope.check_scope(row.values.get("plane"), row.values.get("event_type"))
    return row


class SignerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.appended = Counter("signer_rows_appended", "Rows appended to chains.", registry=registry)
        self.duplicates = Counter("signer_duplicates_skipped", "Events skipped as already chained.", registry=registry)
        self.stale = Counter("signer_stale_messages", "Messages another signer had already applied.", registry=registry)
        self.dead_lettered = Counter(
            "signer_dead_lettered", "Messages sent to the dead-letter topic.", registry=registry
        )
        self.db_retries = Counter("signer_db_retries", "Retryable PostgreSQL failures.", registry=registry)
        self.append_latency = Histogram("signer_append_duration_seconds", "One append transaction.", registry=registry)
        self.commit_latency = Histogram("signer_commit_duration_seconds", "One Kafka offset commit.", registry=registry)
        self.messages_in = Counter("signer_messages_in", "Canonical messages read.", registry=registry)
        self.checkpoints = Counter("signer_checkpoints_written", "Signed checkpoints written.", registry=registry)
        self.sequence_conflicts = Counter(
            "signer_sequence_conflict_rows",
            "Rows flagged sequence_conflict: a different event claimed a session and sequence already taken.",
            registry=registry,
        )
        self.chain_head = Gauge(
            "signer_chain_head_sequence", "Last sequence number appended, per chain.", ["tenant"], registry=registry
        )
        self.lag = Gauge(
            "signer_consumer_lag", "Messages behind the partition end.", ["topic", "partition"], registry=registry
        )


class _SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: SignerWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._worker.join_append()
        self._worker.forget_prepared_state()
        self._worker.commit.forget(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._worker.forget_prepared_state()
        await self._worker.seek_to_stored(list(assigned))


class SignerWorker:
    def __init__(
        self,
        consumer: Any,
        producer: MessageProducer,
        pool: asyncpg.Pool,
        signer: Signer,
        *,
        group: str,
        topic: str,
        dead_letter_topic: str,
        max_batch: int,
        metrics: SignerMetrics,
        stop: asyncio.Event,
        checkpoints: CheckpointPolicy | None = None,
        batch_signer: BatchSigner | None = None,
        keyring: Keyring,
    ) -> None:
        self.consumer = consumer
        self.keyring = keyring
        self.batch_signer = batch_signer
        self.producer = producer
        self.pool = pool
        self.signer = signer
        self.group = group
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self.max_batch = max_batch
        self.metrics = metrics
        self.commit = CommitOffsets(consumer, interval=1.0, latency=metrics.commit_latency)
        self.checkpoints = checkpoints
        self.assigned = False
        self._next_idle_checkpoint = 0.0
        self._messages: Sequence[Any] = ()  # of the batch being appended: their headers go with dead letters
        self._stop = stop
        # Heads as the batches prepared so far leave them; dropped (and the epoch bumped) when that is not so.
        self._heads: dict[str, Head] = {}
        self._epoch = 0
        self._in_flight: asyncio.Task[None] | None = None
        self._in_flight_ids: frozenset[str] = frozenset()

    def subscribe(self) -> None:
        self.consumer.subscribe([self.topic], listener=_SeekToStoredOffsets(self))

    async def seek_to_stored(self, partitions: Sequence[TopicPartition]) -> None:
        backoff = Backoff()
        while True:
            try:
                async with self.pool.acquire() as conn:
                    offsets = await stored_offsets(conn, self.group, self.topic)
                break
            except Exception as exc:
                if not is_retryable_db_error(exc) or self._stop.is_set():
                    raise
                self.metrics.db_retries.inc()
                await backoff.sleep(self._stop)
        for tp in partitions:
            if tp.partition in offsets:
                self.consumer.seek(tp, offsets[tp.partition])
            else:
                await self.consumer.seek_to_beginning(tp)
        self.assigned = True
        log.info("partitions assigned", extra={"offsets": {str(tp): offsets.get(tp.partition) for tp in partitions}})

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_batch)
                for tp, messages in batches.items():
                    if messages:
                        await self._submit(tp, messages)
                if not batches:
                    await self.join_append()
                await self.commit.poll()
                await self._update_lag()
                await self._checkpoint_quiet_chains()
            await self.join_append()
        finally:
            if self._in_flight is not None and not self._in_flight.done():
                self._in_flight.cancel()
        await self.commit.join(10)

    def forget_prepared_state(self) -> None:
        self._heads.clear()
        self._epoch += 1

    async def join_append(self) -> None:
        """Wait for the append in flight, if any; its errors surface here."""
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await task

    async def _checkpoint_quiet_chains(self) -> None:
        if self.checkpoints is None or time.monotonic() < self._next_idle_checkpoint:
            return
        self._next_idle_checkpoint = time.monotonic() + self.checkpoints.every.total_seconds() / 2
        try:
            async with self.pool.acquire() as conn:
                self.metrics.checkpoints.inc(await checkpoint_idle_chains(conn, self.signer, self.checkpoints))
        except Exception as exc:
            if not is_retryable_db_error(exc):
                raise
            await self.pool.expire_connections()
            log.warning("could not checkpoint quiet chains, will retry", extra={"error": describe(exc)})

    async def _submit(self, tp: TopicPartition, messages: Sequence[Any]) -> None:
        self.metrics.messages_in.inc(len(messages))
        items = await self._decode(messages)
        epoch = self._epoch
        prepared = await self._prepare(items)
        await self.join_append()
        if epoch != self._epoch:
            self._heads.clear()
            prepared = await self._prepare(items)
        self._messages = messages
        self._in_flight_ids = prepared.event_ids if prepared is not None else frozenset()
        self._in_flight = asyncio.create_task(self._append(tp, items, prepared))

    async def _decode(self, messages: Sequence[Any]) -> list[OffsetEvent]:
        items: list[OffsetEvent] = []
        for index, message in enumerate(messages, start=1):
            try:
                items.append(OffsetEvent(message.offset, decode_authenticated_row(message, self.keyring)))
            except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
                await self._dead_letter(message, exc)
                items.append(OffsetEvent(message.offset, None))
            if index % _DECODE_CHUNK == 0:
                # The append in flight moves only when the loop turns: its statements and COPY go out meanwhile.
                await asyncio.sleep(0)
        return items

    async def _prepare(self, items: list[OffsetEvent]) -> PreparedBatch | None:
        """The batch hashed and signed ahead; None when it cannot be (an event that cannot be hashed): it is
        then chained under lock, where an event that cannot be appended is found and dead-lettered."""
        backoff = Backoff()
        while True:
            try:
                async with self.pool.acquire() as conn:
                    return await prepare(
                        conn,
                        self.signer,
                        items,
                        self._heads,
                        in_flight=self._in_flight_ids,
                        checkpoints=self.checkpoints,
                        batch_signer=self.batch_signer,
                    )
            except SigningHelperError:
                raise
            except Exception as exc:
                if not is_retryable_db_error(exc):
                    log.warning("batch cannot be prepared, chaining it under lock", extra={"error": describe(exc)})
                    return None
                if self._stop.is_set():
                    raise
                await self.pool.expire_connections()
                self.metrics.db_retries.inc()
                log.warning("database unavailable, retrying", extra={"error": describe(exc)})
                await backoff.sleep(self._stop)

    async def _append(self, tp: TopicPartition, items: list[OffsetEvent], prepared: PreparedBatch | None) -> None:
        backoff = Backoff()
        while True:
            try:
                with self.metrics.append_latency.time():
                    async with self.pool.acquire() as conn:
                        result = await self._append_once(conn, tp, items, prepared)
            except OffsetGap as gap:
                log.warning("offset gap, seeking back", extra={"partition": tp.partition, "stored": gap.stored})
                self.forget_prepared_state()
                self.consumer.seek(tp, gap.stored)
                return
            except SigningHelperError:
                raise  # not the batch's fault: stop, and let the restart pick up from the stored offsets
            except Exception as exc:
                if is_retryable_db_error(exc):
                    # Connections that saw the failure are not reused: one may be stuck mid-protocol.
                    await self.pool.expire_connections()
                    if self._stop.is_set():
                        raise
                    self.metrics.db_retries.inc()
                    log.warning("database unavailable, retrying", extra={"error": describe(exc)})
                    await backoff.sleep(self._stop)
                    continue
                self.forget_prepared_state()
                if len(items) > 1:
                    # Permanent error: find the one event responsible by appending one at a time.
                    for item in items:
                        await self._append(tp, [item], None)
                    return
                log.error("event cannot be appended, dead-lettering", extra={"error": describe(exc)})
                await self._dead_letter_event(tp, items[0], exc)
                items = [OffsetEvent(items[0].offset, None)]
                continue
            break
        if not result.as_prepared:
            self.forget_prepared_state()
        self._record(tp, items, result)
        await self.commit.submit(Position(tp, result.next_offset))

    async def _append_once(
        self, conn: asyncpg.Connection, tp: TopicPartition, items: list[OffsetEvent], prepared: PreparedBatch | None
    ) -> AppendResult:
        where = {"group": self.group, "topic": tp.topic, "partition": tp.partition, "checkpoints": self.checkpoints}
        if prepared is not None:
            return await append_prepared(conn, self.signer, prepared, **where)
        return await append_batch(conn, self.signer, batch=items, **where)

    def _record(self, tp: TopicPartition, items: list[OffsetEvent], result: AppendResult) -> None:
        self.metrics.appended.inc(result.appended)
        self.metrics.duplicates.inc(result.duplicates)
        self.metrics.stale.inc(result.stale)
        self.metrics.checkpoints.inc(result.checkpoints)
        if result.conflicts:
            self.metrics.sequence_conflicts.inc(len(result.conflicts))
            # Kept, flagged and reported: two different events claim one place in a session.
            for tenant, session, sequence, event_id in result.conflicts[:50]:
                log.warning(
                    "sequence conflict: different events claim one session sequence; all are kept and flagged",
                    extra={"tenant": tenant, "session_id": session, "event_sequence": sequence, "event_id": event_id},
                )
        for tenant, head in result.heads.items():
            self.metrics.chain_head.labels(tenant=tenant).set(head)
        if log.isEnabledFor(logging.DEBUG):
            request_ids = sorted({v.decode() for m in self._messages for k, v in m.headers or () if k == "request_id"})
            log.debug(
                "appended",
                extra={
                    "partition": tp.partition,
                    "first_offset": items[0].offset,
                    "last_offset": items[-1].offset,
                    "appended": result.appended,
                    "duplicates": result.duplicates,
                    "stale": result.stale,
                    "request_ids": request_ids[:50],
                },
            )

    async def _dead_letter(self, message: Any, exc: BaseException) -> None:
        self.metrics.dead_lettered.inc()
        log.error("canonical message dead-lettered",
                  extra={"partition": message.partition, "offset": message.offset, "error": type(exc).__name__})
        original = message.headers if isinstance(message.headers, list | tuple) else []
        headers = dead_letter_headers(
            message.topic, message.partition, message.offset, describe(exc), "signer",
            [(k, v) for k, v in original if isinstance(k, str) and isinstance(v, bytes)],
        )
        key = message.key if isinstance(message.key, bytes) else None
        await self._send_dead_letter(key, message.value if isinstance(message.value, bytes) else b"", headers)

    async def _dead_letter_event(self, tp: TopicPartition, item: OffsetEvent, exc: BaseException) -> None:
        assert isinstance(item.event, ChainRow)
        self.metrics.dead_lettered.inc()
        headers = dead_letter_headers(
            tp.topic, tp.partition, item.offset, describe(exc), "signer", self._headers_of(item.offset)
        )
        await self._send_dead_letter(item.event.tenant_id.encode(), item.event.raw, headers)

    def _headers_of(self, offset: int) -> list[tuple[str, bytes]]:
        return next((list(m.headers or ()) for m in self._messages if m.offset == offset), [])

    async def _send_dead_letter(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        await send_until_acknowledged(
            self.producer, self.dead_letter_topic, value, key=key, headers=headers, stop=self._stop
        )

    async def _update_lag(self) -> None:
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                position = await self.consumer.position(tp)
                self.metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(max(0, highwater - position))
