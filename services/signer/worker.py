"""The signer worker: decode -> prepare (hash, sign) -> append to chains with offsets -> commit offsets.

PostgreSQL holds the authoritative offsets; on assignment the consumer seeks to them, so a replay of the
topic or a restart changes nothing. The Kafka commit afterwards only serves lag monitoring.

The append of one batch and the preparation of the next overlap: the next batch is hashed and signed from
the heads the previous one leaves, while PostgreSQL writes it. At most one append is in flight. While it is,
the worker keeps reading, decoding and preparing what arrives, of every partition, and the next append writes
all of it in one transaction (a group commit, up to ``max_batch`` events): a transaction's fixed cost (its
locks, head and offset updates, commit and WAL flush) is then shared by everything that arrived meanwhile,
and a batch waits no longer than the append before it. When an append finds the chain elsewhere than
expected, or an event already stored, each of its partitions is chained under lock instead and the prepared
state is dropped; the batches prepared meanwhile are prepared again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.signer.appender import (
    AppendResult,
    CheckpointPolicy,
    Head,
    OffsetEvent,
    OffsetGap,
    PreparedBatch,
    SequenceClaims,
    StoredDuplicates,
    append_batch,
    append_prepared_together,
    checkpoint_idle_chains,
    prepare,
    stored_offsets,
)
from services.signer.rows import ChainRow, decode_row, decode_usual_row
from services.signer.signing import BatchSigner, SigningHelperError
from shared.db.errors import is_retryable_db_error
from shared.kafka import MessageProducer, send_until_acknowledged
from shared.keys import Signer
from shared.messages import InvalidMessage, canonical_event
from shared.messages.auth import Keyring, KeyStates
from shared.pipeline import Backoff, CommitOffsets, Position, dead_letter_headers, describe

log = logging.getLogger("signer")
# Messages decoded between two turns of the event loop (about as long as the appender's hashing chunks).
_DECODE_CHUNK = 16
# While an append is in flight and batches wait for the next, how long between two looks at the consumer for
# more (the end of the append is seen at once).
_GATHER_WAIT_S = 0.005
# An OffsetEvent from its two values in one C call: the generated ``__new__`` of a NamedTuple is a Python function
# (a frame per call), and the worker makes one per message.
_offset_event = cast(Callable[[type[OffsetEvent], tuple[int, ChainRow | None]], OffsetEvent], tuple.__new__)
# tuple.__new__ fills the fields by position and checks neither their number nor their names.
assert OffsetEvent._fields == ("offset", "event"), "_offset_event builds (offset, event) tuples"


def decode_authenticated_row(message: Any, keyring: Keyring, keys: dict[bytes, KeyStates] | None = None) -> ChainRow:
    """The row of one canonical message whose authentication holds and whose event id matches its header.

    The tenant the row is chained to is the ``tenant_id`` of that authenticated value: only a producer
    holding an accepted key can add to a chain, and only events of the planes and types its key may sign.
    ``keys``: ``keyring.states_by_header(canonical_event.DOMAIN)``, when the caller looked it up once for many
    messages.
    """
    if decode_usual_row is not None:
        if keys is None:
            keys = keyring.states_by_header(canonical_event.DOMAIN)
        row = decode_usual_row(message.value, message.headers, keys)
        if row is not None:
            return row
    envelope = canonical_event.decode(message.value, message.headers, keyring)
    row = decode_row(envelope.value)
    if row.event_id != envelope.event_id:
        raise InvalidMessage("canonical event's event_id differs from its authenticated header")
    plane, event_type = row.values.get("plane"), row.values.get("event_type")
    if envelope.scope is None or not envelope.scope.permits(plane, event_type):
        envelope.check_scope(plane, event_type)  # refuses it, saying why
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


@dataclass
class _Pending:
    """Messages of one partition read, decoded and prepared, waiting for the next append."""

    tp: TopicPartition
    messages: Sequence[Any]
    items: list[OffsetEvent]
    prepared: PreparedBatch | None
    epoch: int  # of the head state it was prepared from


class _SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: SignerWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self._worker.positioned.difference_update(revoked)
        await self._worker.join_append()
        self._worker.forget_prepared_state()
        self._worker.commit.forget(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._worker.forget_prepared_state()
        try:
            await self._worker.seek_to_stored(list(assigned))
        except Exception as exc:  # aiokafka would only log it, and the partitions would never be read
            self._worker.listener_failure = exc


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
        # Partitions sought to their stored offsets. The consumer has a partition (and may fetch it from the
        # group's Kafka commit) before the listener has read where PostgreSQL says to start: until then, what
        # it returns of that partition is not this worker's to append.
        self.positioned: set[TopicPartition] = set()
        self.listener_failure: Exception | None = None
        self._next_idle_checkpoint = 0.0
        # The parts of the append in flight: the headers of their messages go with dead letters.
        self._appending: list[_Pending] = []
        self._stop = stop
        # Heads as the batches prepared so far leave them; dropped (and the epoch bumped) when that is not so.
        self._heads: dict[str, Head] = {}
        self._epoch = 0
        # The sequences this signer's tenants' sessions claim, checked against the locked heads at each use.
        self.sequence_claims = SequenceClaims()
        # Whether batches are prepared with a lookup of the events already stored: only after meeting some.
        self.stored_duplicates = StoredDuplicates()
        self._in_flight: asyncio.Task[None] | None = None
        self._in_flight_ids: set[str] = set()  # of the append in flight; replaced, never changed
        # Read and prepared while an append is in flight; the next append writes them together.
        self._pending: list[_Pending] = []
        self._pending_events = 0
        self._pending_ids: set[str] = set()
        # The run loop and the rebalance listener both start appends: one at a time.
        self._starting = asyncio.Lock()

    def subscribe(self) -> None:
        self.consumer.subscribe([self.topic], listener=_SeekToStoredOffsets(self))

    async def seek_to_stored(self, partitions: Sequence[TopicPartition]) -> None:
        """Each partition sought to its offset stored in PostgreSQL, or to its beginning when none is. Every seek
        is made at once, with nothing awaited in between, and the partitions count as positioned from then on:
        what the consumer returns of a partition after its seek starts at that offset, and what it returned
        before (fetched from the group's Kafka commit) is dropped, as the seek sends it back there anyway."""
        backoff = Backoff()
        while True:
            try:
                async with self.pool.acquire() as conn:
                    offsets = await stored_offsets(conn, self.group, self.topic)
                unstored = [tp for tp in partitions if tp.partition not in offsets]
                beginnings = await self.consumer.beginning_offsets(unstored) if unstored else {}
                break
            except KafkaError:
                if self._stop.is_set():
                    raise
                await backoff.sleep(self._stop)
            except Exception as exc:
                if not is_retryable_db_error(exc) or self._stop.is_set():
                    raise
                self.metrics.db_retries.inc()
                await backoff.sleep(self._stop)
        for tp in partitions:
            self.consumer.seek(tp, offsets[tp.partition] if tp.partition in offsets else beginnings[tp])
        self.positioned.update(partitions)
        self.assigned = True
        log.info("partitions assigned", extra={"offsets": {str(tp): offsets.get(tp.partition) for tp in partitions}})

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                batches = await self._fetch()
                if self.listener_failure is not None:
                    raise self.listener_failure
                for tp, messages in batches.items():
                    if messages and tp in self.positioned:
                        await self._submit(tp, messages)
                if not batches and not self._pending:
                    await self.join_append()
                await self.commit.poll()
                await self._update_lag()
                await self._checkpoint_quiet_chains()
            await self.join_append()
        finally:
            if self._in_flight is not None and not self._in_flight.done():
                self._in_flight.cancel()
        await self.commit.join(10)

    async def _fetch(self) -> dict[TopicPartition, list[Any]]:
        """Messages read; with batches waiting for the append in flight, what the consumer holds already, else
        nothing once that append ends (which then starts the next with them) or after a short wait."""
        room = max(1, self.max_batch - self._pending_events)
        batches: dict[TopicPartition, list[Any]]
        if not self._pending:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=room)
            return batches
        in_flight = self._in_flight
        if in_flight is not None and not in_flight.done():
            # A getmany that waits is not cancelled when the append ends: the consumer would count it as a
            # fetch in progress for ever, and never leave the group when this worker stops reading.
            batches = await self.consumer.getmany(timeout_ms=0, max_records=room)
            if batches:
                return batches
            done, _ = await asyncio.wait((in_flight,), timeout=_GATHER_WAIT_S)
            if not done:
                return {}
        await self._start_pending()
        return {}

    def forget_prepared_state(self) -> None:
        self._heads.clear()
        self._epoch += 1

    async def join_append(self) -> None:
        """Wait for the append in flight, and for the append of what is waiting, if any; errors surface here."""
        while True:
            task, self._in_flight = self._in_flight, None
            if task is not None:
                await task
            if not self._pending:
                return
            await self._start_pending()

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
        """Decode and prepare ``messages``; they are appended with the append after the one in flight, or
        now if none is."""
        self.metrics.messages_in.inc(len(messages))
        items = await self._decode(messages)
        epoch = self._epoch
        prepared = await self._prepare(items)
        self._pending.append(_Pending(tp, messages, items, prepared, epoch))
        self._pending_events += len(items)
        if prepared is not None:
            self._pending_ids.update(prepared.event_ids)
        in_flight = self._in_flight
        if in_flight is None or in_flight.done() or self._pending_events >= self.max_batch:
            await self._start_pending()

    async def _start_pending(self) -> None:
        """Wait for the append in flight, then start the append of everything waiting, in one transaction."""
        async with self._starting:
            await self._start_pending_unlocked()

    async def _start_pending_unlocked(self) -> None:
        await self._join_in_flight()
        pending, self._pending, self._pending_events = self._pending, [], 0
        if any(part.epoch != self._epoch for part in pending):
            # Prepared from heads that turned out wrong: prepared again, in order, from the stored heads.
            self._heads.clear()
            # A new set rather than cleared: a set handed to a prepare as its ``pending`` ids is never changed.
            self._pending_ids = set()
            for part in pending:
                part.prepared = await self._prepare(part.items)
                if part.prepared is not None:
                    self._pending_ids.update(part.prepared.event_ids)
        # The event ids of the parts prepared (each added as its part was, or again above), now in flight.
        in_flight_ids, self._pending_ids = self._pending_ids, set()
        if not pending:
            return
        self._appending = pending
        self._in_flight_ids = in_flight_ids
        self._in_flight = asyncio.create_task(self._append_together(pending))

    async def _join_in_flight(self) -> None:
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await task

    async def _decode(self, messages: Sequence[Any]) -> list[OffsetEvent]:
        items: list[OffsetEvent] = []
        append, keyring = items.append, self.keyring
        keys = keyring.states_by_header(canonical_event.DOMAIN)  # one look-up for them all: the keyring is fixed
        before_turn = _DECODE_CHUNK
        for message in messages:
            try:
                append(_offset_event(OffsetEvent, (message.offset, decode_authenticated_row(message, keyring, keys))))
            except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
                await self._dead_letter(message, exc)
                append(OffsetEvent(message.offset, None))
            before_turn -= 1
            if not before_turn:
                before_turn = _DECODE_CHUNK
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
                        pending=self._pending_ids,
                        checkpoints=self.checkpoints,
                        batch_signer=self.batch_signer,
                        stored_duplicates=self.stored_duplicates,
                    )
            except SigningHelperError:
                raise
            except Exception as exc:
                if not is_retryable_db_error(exc):
                    log.warning("batch cannot be prepared, chaining it under lock", extra={"error": describe(exc)})
                    return None
                await self._wait_out_database_error(exc, backoff)

    async def _wait_out_database_error(self, exc: Exception, backoff: Backoff) -> None:
        """A retryable database error: drop the pool's connections, count it and back off; raises it once stopping."""
        # Connections that saw the failure are not reused: one may be stuck mid-protocol.
        await self.pool.expire_connections()
        if self._stop.is_set():
            raise exc
        self.metrics.db_retries.inc()
        log.warning("database unavailable, retrying", extra={"error": describe(exc)})
        await backoff.sleep(self._stop)

    async def _append_together(self, pending: list[_Pending]) -> None:
        """One transaction for every prepared batch waiting; if one could not be prepared, or the chain or
        offsets moved, each partition's batches go through ``_append`` (chained under lock) instead."""
        parts = [(part.tp.partition, part.prepared) for part in pending if part.prepared is not None]
        if len(parts) == len(pending):
            backoff = Backoff()
            while True:
                try:
                    with self.metrics.append_latency.time():
                        async with self.pool.acquire() as conn:
                            result = await append_prepared_together(conn, parts, group=self.group, topic=self.topic,
                                                                  claims=self.sequence_claims,
                                                                  stored_duplicates=self.stored_duplicates)
                except SigningHelperError:
                    raise  # not the batch's fault: stop, and let the restart pick up from the stored offsets
                except Exception as exc:
                    if not is_retryable_db_error(exc):
                        log.warning("prepared batches cannot be appended together, chaining each under lock",
                                    extra={"error": describe(exc)})
                        break
                    await self._wait_out_database_error(exc, backoff)
                    continue
                if result is None:
                    log.info("chain or offsets moved since the batches were prepared, or an event was already"
                             " stored, chaining them under lock",
                             extra={"partitions": sorted({part.tp.partition for part in pending}),
                                    "events": sum(len(part.items) for part in pending)})
                    break
                self._record_together(pending, result)
                for tp in {part.tp for part in pending}:
                    await self.commit.submit(Position(tp, result.next_offsets[tp.partition]))
                return
        self.forget_prepared_state()
        by_partition: dict[TopicPartition, list[OffsetEvent]] = {}
        for part in pending:
            by_partition.setdefault(part.tp, []).extend(part.items)
        for tp, items in by_partition.items():
            await self._append(tp, items)

    async def _append(self, tp: TopicPartition, items: list[OffsetEvent]) -> None:
        """Chain ``items`` of one partition under lock, event by event if one of them cannot be appended."""
        backoff = Backoff()
        while True:
            try:
                with self.metrics.append_latency.time():
                    async with self.pool.acquire() as conn:
                        result = await append_batch(conn, self.signer, group=self.group, topic=tp.topic,
                                                    partition=tp.partition, batch=items, checkpoints=self.checkpoints,
                                                    claims=self.sequence_claims,
                                                    stored_duplicates=self.stored_duplicates)
            except OffsetGap as gap:
                log.warning("offset gap, seeking back", extra={"partition": tp.partition, "stored": gap.stored})
                self.forget_prepared_state()
                self.consumer.seek(tp, gap.stored)
                return
            except SigningHelperError:
                raise  # not the batch's fault: stop, and let the restart pick up from the stored offsets
            except Exception as exc:
                if is_retryable_db_error(exc):
                    await self._wait_out_database_error(exc, backoff)
                    continue
                self.forget_prepared_state()
                if len(items) > 1:
                    # Permanent error: find the one event responsible by appending one at a time.
                    for item in items:
                        await self._append(tp, [item])
                    return
                log.error("event cannot be appended, dead-lettering", extra={"error": describe(exc)})
                await self._dead_letter_event(tp, items[0], exc)
                items = [OffsetEvent(items[0].offset, None)]
                continue
            break
        self.forget_prepared_state()  # the chain moved under lock: heads prepared ahead are out of date
        self._record(tp, items, result)
        await self.commit.submit(Position(tp, result.next_offset))

    def _record_together(self, pending: list[_Pending], result: AppendResult) -> None:
        self._record_counts(result)
        if log.isEnabledFor(logging.DEBUG):
            for tp in {part.tp for part in pending}:
                items = [item for part in pending if part.tp == tp for item in part.items]
                self._log_appended(tp, items, result)

    def _record(self, tp: TopicPartition, items: list[OffsetEvent], result: AppendResult) -> None:
        self._record_counts(result)
        if log.isEnabledFor(logging.DEBUG):
            self._log_appended(tp, items, result)

    def _record_counts(self, result: AppendResult) -> None:
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

    def _log_appended(self, tp: TopicPartition, items: list[OffsetEvent], result: AppendResult) -> None:
        request_ids = sorted({v.decode() for part in self._appending if part.tp == tp for m in part.messages
                              for k, v in m.headers or () if k == "request_id"})
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
            tp.topic, tp.partition, item.offset, describe(exc), "signer", self._headers_of(tp, item.offset)
        )
        await self._send_dead_letter(item.event.tenant_id.encode(), item.event.raw, headers)

    def _headers_of(self, tp: TopicPartition, offset: int) -> list[tuple[str, bytes]]:
        messages = (m for part in self._appending if part.tp == tp for m in part.messages)
        return next((list(m.headers or ()) for m in messages if m.offset == offset), [])

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
