"""The dead-letter topic: list, inspect (never the content in clear) and requeue, once per dead letter.

A dead letter is the failed message itself (a raw OTLP batch from the redactor, or a canonical event from
the signer) with ``dlq.*`` headers saying where it came from and why it failed, plus the original headers.

Requeue sends it back to the topic it failed on (``dlq.source_topic``) with its original headers, once the
cause is fixed. Two things keep a requeue from creating duplicates:

- downstream, the signer skips event ids it has chained already, whatever is sent twice;
- a marker per dead letter (key ``partition:offset`` on a compacted topic), written only after the broker
  acknowledged the requeued message, makes a second requeue of the same dead letter a no-op.

A crash between the two sends leaves no marker, so the next requeue sends the batch again; the signer's
dedupe makes that harmless. The markers live in Kafka, next to the dead letters, so the tooling works while
PostgreSQL is down.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from services.auditctl.ops.produce import Outbound, ProduceStep, annotate
from services.auditctl.ops.reader import Record, TopicSource
from shared import otlp
from shared.kafka import KafkaConnection, make_admin
from shared.messages import InvalidMessage
from shared.messages import dead_letter as dead_letter_message

REQUEUE_ID = "requeue.id"
REQUEUE_SOURCE = "requeue.source"
_TOOL_PREFIXES = ("dlq.", "requeue.", "replay.")


@dataclass(frozen=True)
class DeadLetterRef:
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> DeadLetterRef:
        partition, sep, offset = text.strip().partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise ValueError(f"{text!r} is not PARTITION:OFFSET of the dead-letter topic")
        return cls(int(partition), int(offset))


@dataclass(frozen=True)
class RequeueMarker:
    ref: DeadLetterRef
    requeued_at: str
    requeue_id: str
    target: str

    def to_json(self) -> bytes:
        return json.dumps({"requeued_at": self.requeued_at, "requeue_id": self.requeue_id,
                           "target": self.target}).encode()

    @classmethod
    def from_record(cls, record: Record) -> RequeueMarker | None:
        if record.key is None or not record.value:
            return None  # a tombstone, or someone else's message: not a marker
        try:
            ref = DeadLetterRef.parse(record.key.decode())
            data = json.loads(record.value)
            return cls(ref, str(data["requeued_at"]), str(data["requeue_id"]), str(data["target"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None


@dataclass(frozen=True)
class DeadLetter:
    ref: DeadLetterRef
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    stage: str
    error: str
    failed_at: datetime | None
    original_headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Record) -> DeadLetter:
        """Whatever its headers: one whose context cannot be read is listed as unreadable, never requeued."""
        try:
            context = dead_letter_message.decode(record.headers)
        except InvalidMessage as exc:
            return cls(DeadLetterRef(record.partition, record.offset), record.timestamp_ms, record.key,
                       record.value, record.headers, None, None, None, "unreadable", str(exc), None, {})
        return cls(
            DeadLetterRef(record.partition, record.offset),
            record.timestamp_ms,
            record.key,
            record.value,
            record.headers,
            context.source_topic,
            context.source_partition,
            context.source_offset,
            context.stage,
            context.error,
            context.failed_at,
            {k: v.decode("utf-8", "replace") for k, v in context.original_headers},
        )

    @property
    def tenant(self) -> str | None:
        return self.original_headers.get("tenant") or (self.key.decode("utf-8", "replace") if self.key else None)

    @property
    def source(self) -> str:
        if self.source_topic is None:
            return "?"
        return f"{self.source_topic}/{self.source_partition}/{self.source_offset}"

    def summary(self, marker: RequeueMarker | None) -> dict[str, Any]:
        return {
            "ref": str(self.ref),
            "failed_at": self.failed_at.isoformat() if self.failed_at else None,
            "stage": self.stage,
            "source": self.source,
            "tenant": self.tenant,
            "request_id": self.original_headers.get("request_id"),
            "records": _int_or_none(self.original_headers.get("record_count")),
            "bytes": len(self.value),
            "error": self.error,
            "requeued_at": marker.requeued_at if marker else None,
        }


def _int_or_none(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


async def read_all(reader: TopicSource, topic: str) -> list[Record]:
    """Everything retained in ``topic`` now (bounded by the end offsets taken at the start)."""
    partitions = await reader.partitions(topic)
    records: list[Record] = []
    for partition, (begin, end) in sorted((await reader.bounds(topic, partitions)).items()):
        records.extend([r async for r in reader.read_range(topic, partition, begin, end)])
    return records


async def read_dead_letters(reader: TopicSource, topic: str) -> list[DeadLetter]:
    return [DeadLetter.from_record(r) for r in await read_all(reader, topic)]


async def read_markers(reader: TopicSource, topic: str) -> dict[DeadLetterRef, RequeueMarker]:
    """The latest marker per dead letter; a missing marker topic means nothing was requeued yet."""
    try:
        records = await read_all(reader, topic)
    except LookupError:
        return {}
    markers: dict[DeadLetterRef, RequeueMarker] = {}
    for record in records:
        marker = RequeueMarker.from_record(record)
        if marker is not None:
            markers[marker.ref] = marker
    return markers


async def ensure_marker_topic(kafka: KafkaConnection | str, topic: str, replication_factor: int) -> None:
    """Compacted, so it keeps one marker per dead letter for as long as the dead letters are kept."""
    admin = make_admin(kafka)
    await admin.start()
    try:
        if topic in set(await admin.list_topics()):
            return
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, 1, replication_factor,
                                                topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on: explicit refs, or every one matching the filters."""

    refs: frozenset[DeadLetterRef] = frozenset()
    stage: str | None = None
    tenant: str | None = None
    source_topic: str | None = None
    error_contains: str | None = None
    since: datetime | None = None

    def matches(self, dead_letter: DeadLetter) -> bool:
        if self.refs and dead_letter.ref not in self.refs:
            return False
        if self.stage and dead_letter.stage != self.stage:
            return False
        if self.tenant and dead_letter.tenant != self.tenant:
            return False
        if self.source_topic and dead_letter.source_topic != self.source_topic:
            return False
        if self.error_contains and self.error_contains.lower() not in dead_letter.error.lower():
            return False
        return not (self.since and (dead_letter.failed_at is None or dead_letter.failed_at < self.since))


def select(dead_letters: Iterable[DeadLetter], selection: Selection) -> list[DeadLetter]:
    return [d for d in dead_letters if selection.matches(d)]


def describe_payload(dead_letter: DeadLetter, *, raw_logs_topic: str, raw_metrics_topic: str,
                     canonical_topic: str) -> dict[str, Any]:
    """What the payload is, without any of its content: size, digest, and for a batch its shape."""
    shape: dict[str, Any] = {"bytes": len(dead_letter.value),
                             "sha256": hashlib.sha256(dead_letter.value).hexdigest()}
    if dead_letter.source_topic in (raw_logs_topic, raw_metrics_topic):
        shape.update(_otlp_shape(dead_letter, logs=dead_letter.source_topic == raw_logs_topic))
    elif dead_letter.source_topic == canonical_topic:
        shape.update(_canonical_shape(dead_letter.value))
    return shape


def _otlp_shape(dead_letter: DeadLetter, *, logs: bool) -> dict[str, Any]:
    encoding = otlp.media_type(dead_letter.original_headers.get("content_type", otlp.PROTOBUF))
    if encoding is None:
        return {"decodable": "no: unknown content type"}
    message_type: Any = otlp.ExportLogsServiceRequest if logs else otlp.ExportMetricsServiceRequest
    try:
        request = otlp.decode_request(dead_letter.value, encoding, message_type)
    except otlp.PayloadError as exc:
        return {"decodable": f"no: {exc}"}
    services: Counter[str] = Counter()
    resources = request.resource_logs if logs else request.resource_metrics
    for resource in resources:
        for attr in resource.resource.attributes:
            if attr.key == "service.name":
                services[attr.value.string_value] += 1
    if not logs:
        names = Counter(m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
        return {"decodable": "yes", "data_points": otlp.count_data_points(request), "metric_names": dict(names),
                "service_names": dict(services)}
    events: Counter[str] = Counter()
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                name = next((a.value.string_value for a in record.attributes if a.key == "event.name"), "")
                events[name or "(unnamed)"] += 1
    return {"decodable": "yes", "log_records": sum(events.values()), "event_names": dict(events),
            "service_names": dict(services)}


def _canonical_shape(value: bytes) -> dict[str, Any]:
    try:
        event = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return {"decodable": f"no: {type(exc).__name__}"}
    if not isinstance(event, dict):
        return {"decodable": "no: not a JSON object"}
    return {"decodable": "yes", "event_id": event.get("event_id"), "event_type": event.get("event_type"),
            "tenant_id": event.get("tenant_id"), "event_time": event.get("event_time"),
            "content_fields": sorted(event.get("content") or {})}


@dataclass
class RequeueSummary:
    requeue_id: str
    requeued: int = 0
    already_requeued: int = 0
    refused: list[str] = field(default_factory=list)
    would_requeue: list[str] = field(default_factory=list)

    def describe(self, dry_run: bool) -> list[str]:
        if dry_run:
            lines = [f"dry run: would requeue {len(self.would_requeue)} dead letter(s)"]
            lines.extend(f"  {line}" for line in self.would_requeue)
        else:
            lines = [f"requeue {self.requeue_id}: requeued {self.requeued} dead letter(s)"]
        lines.append(f"  already requeued (skipped): {self.already_requeued}")
        lines.extend(f"  refused: {reason}" for reason in self.refused)
        return lines


async def requeue(dead_letters: Sequence[DeadLetter], markers: dict[DeadLetterRef, RequeueMarker],
                  produce: ProduceStep, *, dead_letter_topic: str, marker_topic: str, allowed_targets: Sequence[str],
                  max_message_bytes: int, dry_run: bool = False, now: datetime | None = None) -> RequeueSummary:
    """Sends each selected dead letter back to its source topic, then marks it; marked ones are skipped."""
    summary = RequeueSummary(uuid.uuid4().hex)
    for dead_letter in dead_letters:
        if dead_letter.ref in markers:
            summary.already_requeued += 1
            continue
        target = dead_letter.source_topic
        if target is None or target not in allowed_targets:
            summary.refused.append(f"{dead_letter.ref}: source topic {target!r} is not a pipeline input")
            continue
        if dry_run:
            summary.would_requeue.append(f"{dead_letter.ref} -> {target} ({dead_letter.stage}: {dead_letter.error})")
            continue
        added = [(REQUEUE_ID, summary.requeue_id.encode()),
                 (REQUEUE_SOURCE, f"{dead_letter_topic}/{dead_letter.ref.partition}/{dead_letter.ref.offset}".encode())]
        headers = annotate(dead_letter.headers, added, drop_prefixes=_TOOL_PREFIXES, key=dead_letter.key,
                           value=dead_letter.value, max_message_bytes=max_message_bytes)
        await produce.send_and_wait(Outbound(target, dead_letter.key, dead_letter.value, headers))
        # Only now, with the batch acknowledged, may the marker say it was requeued.
        marker = RequeueMarker(dead_letter.ref, (now or datetime.now(UTC)).isoformat(), summary.requeue_id, target)
        await produce.send_and_wait(Outbound(marker_topic, str(dead_letter.ref).encode(), marker.to_json(), []))
        markers[dead_letter.ref] = marker
        summary.requeued += 1
    return summary
