"""Replay: re-process a window of the raw log topic through the running redactor and signer.

Design: the replay re-produces the window's raw messages, byte for byte with their original headers (the
tenant and org the receiver took from the licence), to the raw topic, adding ``replay.id`` and
``replay.source``. The deployed redactor, with its PII engine and policies, then does the redaction, and
the signer the chaining: a replay never runs a second, possibly differently configured, redaction path.

Idempotence: every event id is derived from the record itself (tenant, session, sequence, event name, or a
content hash), so the replay can compute the ids a raw message will yield without redacting anything. It
looks them up in ``audit_logs`` and

- sends nothing for a message whose events are all chained already (counted: skipped as duplicates),
- re-sends a message with at least one missing event; the signer skips the ones chained meanwhile,
- dead-letters (stage ``replay``) a message the redactor could never process, as the redactor would.

Replaying the same window twice therefore adds no row the first replay did not add, and the chain only ever
grows at its head: no duplicate, no fork. Chained rows are never rewritten: a replay fills gaps (events
dead-lettered, dropped, or lost with a restored database); it cannot un-chain a row already written.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from services.auditctl.ops.produce import Outbound, ProduceStep, annotate, submit_with_backpressure
from services.auditctl.ops.reader import Record, TopicSource
from services.auditctl.ops.window import ResolvedWindow
from shared.pipeline import dead_letter_headers

REPLAY_ID = "replay.id"
REPLAY_SOURCE = "replay.source"
TOOL_HEADER_PREFIXES = ("replay.", "requeue.", "dlq.")


class Unprocessable(Exception):
    """The redactor would dead-letter this raw message (no tenant headers, undecodable payload, ...)."""


class EventIdentifier(Protocol):
    """The event ids the redactor will produce from one raw message, in order, without redacting."""

    def __call__(self, value: bytes, headers: Sequence[tuple[str, bytes]]) -> list[str]: ...


class ChainedIds(Protocol):
    async def existing(self, event_ids: Collection[str]) -> set[str]: ...


@dataclass(frozen=True)
class ReplayPlan:
    window: ResolvedWindow
    tenant: str | None
    estimated_records: int
    sampled_messages: int

    @property
    def messages(self) -> int:
        return self.window.messages

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.window.topic,
            "tenant": self.tenant,
            "partitions": [{"partition": r.partition, "start": r.start, "end": r.end, "messages": r.messages}
                           for r in self.window.ranges],
            "messages": self.messages,
            "estimated_records": self.estimated_records,
            "sampled_messages": self.sampled_messages,
            "notes": list(self.window.notes),
        }

    def describe(self) -> list[str]:
        who = f"tenant {self.tenant}" if self.tenant else "all tenants"
        lines = [f"replay plan for {self.window.topic} ({who}):"]
        for r in self.window.ranges:
            lines.append(f"  partition {r.partition}: offsets {r.start}-{r.end} ({r.messages} messages)")
        estimate = f"~{self.estimated_records} records" if self.sampled_messages else "no records"
        if self.tenant and self.sampled_messages:
            estimate += f" of {self.tenant}"
        lines.append(f"  total: {self.messages} messages, {estimate}"
                     f" (estimated from {self.sampled_messages} sampled messages)")
        lines.extend(f"  note: {note}" for note in self.window.notes)
        return lines


@dataclass
class ReplaySummary:
    replay_id: str
    messages_read: int = 0
    other_tenants: int = 0
    replayed_messages: int = 0
    replayed_events: int = 0
    skipped_duplicate_events: int = 0
    skipped_messages: int = 0
    messages_without_events: int = 0
    dead_lettered: int = 0
    confirmed_events: int | None = None
    missing_event_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> list[str]:
        lines = [
            f"replay {self.replay_id}: read {self.messages_read} messages"
            + (f" ({self.other_tenants} of other tenants ignored)" if self.other_tenants else ""),
            f"  replayed:                {self.replayed_events} events in {self.replayed_messages} messages",
            f"  skipped as duplicates:   {self.skipped_duplicate_events} events"
            f" ({self.skipped_messages} messages not re-sent)",
            f"  dead-lettered:           {self.dead_lettered} messages",
        ]
        if self.messages_without_events:
            lines.append(f"  nothing to chain:        {self.messages_without_events} messages (policy drops them)")
        if self.confirmed_events is not None:
            lines.append(f"  chained in PostgreSQL:   {self.confirmed_events} of {self.replayed_events}"
                         " replayed events")
        return lines


def record_count(record: Record) -> int:
    """The receiver's ``record_count`` header; 1 when absent or garbled (it only feeds an estimate)."""
    try:
        return max(0, int(record.header("record_count") or 1))
    except ValueError:
        return 1


async def plan_replay(reader: TopicSource, window: ResolvedWindow, tenant: str | None,
                      sample_per_partition: int = 20) -> ReplayPlan:
    """Message counts are exact (offsets); records are estimated from the first messages of each range."""
    estimated = 0.0
    sampled_total = 0
    for r in window.ranges:
        if not r.messages:
            continue
        sampled = matching_records = 0
        async for record in reader.read_range(window.topic, r.partition, r.start, r.end,
                                              max_records=sample_per_partition):
            sampled += 1
            if tenant is None or record.header("tenant") == tenant:
                matching_records += record_count(record)
        if sampled:
            estimated += r.messages * matching_records / sampled
            sampled_total += sampled
    return ReplayPlan(window, tenant, round(estimated), sampled_total)


class Replayer:
    def __init__(self, reader: TopicSource, produce: ProduceStep, chained: ChainedIds, identify: EventIdentifier,
                 *, raw_topic: str, dead_letter_topic: str, max_message_bytes: int,
                 lookup_batch: int = 200, replay_id: str | None = None) -> None:
        self._reader = reader
        self._produce = produce
        self._chained = chained
        self._identify = identify
        self._raw_topic = raw_topic
        self._dead_letter_topic = dead_letter_topic
        self._max_message_bytes = max_message_bytes
        self._lookup_batch = lookup_batch
        self.summary = ReplaySummary(replay_id or uuid.uuid4().hex)
        # Every id met in this run: a client's retry, or an earlier replay's copy, puts the same events in two
        # raw messages of the window; each event is counted (and re-sent) once.
        self._seen_ids: set[str] = set()
        self._replayed_ids: list[str] = []

    async def run(self, plan: ReplayPlan, progress: Callable[[int], None] = lambda _: None) -> ReplaySummary:
        for r in plan.window.ranges:
            batch: list[Record] = []
            async for record in self._reader.read_range(plan.window.topic, r.partition, r.start, r.end):
                self.summary.messages_read += 1
                progress(1)
                if plan.tenant is not None and record.header("tenant") != plan.tenant:
                    self.summary.other_tenants += 1
                    continue
                batch.append(record)
                if len(batch) >= self._lookup_batch:
                    await self._process(batch)
                    batch = []
                await self._produce.poll()
            if batch:
                await self._process(batch)
        await self._produce.join()
        return self.summary

    async def _process(self, batch: Sequence[Record]) -> None:
        identified: list[tuple[Record, list[str]]] = []
        for record in batch:
            try:
                identified.append((record, self._identify(record.value, record.headers)))
            except Unprocessable as exc:
                await self._dead_letter(record, exc)
        chained = await self._chained.existing({i for _, ids in identified for i in ids} - self._seen_ids)
        for record, ids in identified:
            fresh = [i for i in dict.fromkeys(ids) if i not in self._seen_ids]
            self._seen_ids.update(fresh)
            missing = [i for i in fresh if i not in chained]
            self.summary.skipped_duplicate_events += len(fresh) - len(missing)
            if not ids:
                self.summary.messages_without_events += 1
            elif not missing:
                self.summary.skipped_messages += 1
            else:
                await self._resend(record, missing)

    async def _resend(self, record: Record, missing: list[str]) -> None:
        added = [(REPLAY_ID, self.summary.replay_id.encode()),
                 (REPLAY_SOURCE, f"{record.topic}/{record.partition}/{record.offset}".encode())]
        headers = annotate(record.headers, added, drop_prefixes=TOOL_HEADER_PREFIXES, key=record.key,
                           value=record.value, max_message_bytes=self._max_message_bytes)

        def acknowledged(_: object) -> None:
            self.summary.replayed_messages += 1
            self.summary.replayed_events += len(missing)
            self._replayed_ids.extend(missing)

        await submit_with_backpressure(self._produce, Outbound(self._raw_topic, record.key, record.value, headers),
                                       acknowledged)

    async def _dead_letter(self, record: Record, exc: Unprocessable) -> None:
        headers = dead_letter_headers(record.topic, record.partition, record.offset, f"Unprocessable: {exc}",
                                      "replay", [(k, v) for k, v in record.headers
                                                 if not k.startswith(("replay.", "requeue."))])
        headers.append((REPLAY_ID, self.summary.replay_id.encode()))

        def acknowledged(_: object) -> None:
            self.summary.dead_lettered += 1

        await submit_with_backpressure(
            self._produce, Outbound(self._dead_letter_topic, record.key, record.value, headers), acknowledged)

    async def wait_until_chained(self, timeout: float, poll_interval: float = 0.5) -> ReplaySummary:
        """Waits for every replayed event to be chained; records how many were and which were not."""
        remaining = set(self._replayed_ids)
        deadline = time.monotonic() + timeout
        while remaining:
            remaining -= await self._chained.existing(remaining)
            if not remaining or time.monotonic() >= deadline:
                break
            await asyncio.sleep(poll_interval)
        self.summary.confirmed_events = len(self._replayed_ids) - len(remaining)
        self.summary.missing_event_ids = sorted(remaining)
        return self.summary
