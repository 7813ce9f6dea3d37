"""Raw OTLP batch -> redacted canonical events. Synchronous and pure but for the PII engine it is given."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from services.redactor.mapping import AUDITED_EVENTS, DOCUMENTED_EVENTS, MappedRecord, attributes_of, map_record
from shared import otlp
from shared.canonical import WITHHELD_MARKER, CanonicalEvent
from shared.messages.raw_batch import RawBatch

log = logging.getLogger("redactor")


class TextRedactor(Protocol):
    """The PII engine as the transform sees it; raising means detection is unavailable for this field."""

    def redact_text(self, text: str) -> Any: ...

    def redact_json_text(self, text: str) -> Any: ...


class EngineLookup(Protocol):
    def engine_for(self, tenant: str) -> TextRedactor | None:
        """The engine for a tenant's posture, or None when detection is unavailable for it."""
        ...


class BatchRejected(Exception):
    """A raw message that can never be processed (bad headers or payload): it goes to the dead letters."""


@dataclass(frozen=True)
class BatchContext:
    tenant: str
    org: str
    license_id: str | None
    received_at: datetime
    batch_id: str | None

    @classmethod
    def of(cls, batch: RawBatch) -> BatchContext:
        """From a decoded (authenticated, checked) raw batch: the receiver's word, from the licence."""
        return cls(batch.tenant, batch.org, batch.license_id, batch.received_at, batch.request_id)


@dataclass
class TransformStats:
    records_in: int = 0
    events_out: int = 0
    dropped_other: int = 0
    other_kept: int = 0
    withheld_fields: int = 0
    redactions: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TransformPolicy:
    plane_by_service: Mapping[str, str]
    default_plane: str
    keep_other_events: bool
    keep_unknown_attributes: bool


JSON_CONTENT_FIELDS = frozenset({"tool_parameters", "tool_input"})


def _redact_field(
    engine: TextRedactor | None, name: str, text: str, stats: TransformStats
) -> tuple[str, dict[str, int] | None]:
    """Fail closed: if detection is off, raises, or runs over budget, the content is withheld."""
    if engine is None:
        stats.withheld_fields += 1
        return WITHHELD_MARKER, None
    try:
        result = engine.redact_json_text(text) if name in JSON_CONTENT_FIELDS else engine.redact_text(text)
    except Exception as exc:
        stats.withheld_fields += 1
        log.warning("detection unavailable, content withheld", extra={"field": name, "error": type(exc).__name__})
        return WITHHELD_MARKER, None
    counts = {kind: int(n) for kind, n in result.counts.items() if n}
    for kind, n in counts.items():
        stats.redactions[kind] = stats.redactions.get(kind, 0) + n
    return str(result.text), counts


def _redact_value(
    engine: TextRedactor | None,
    path: str,
    value: Any,
    policy: TransformPolicy,
    stats: TransformStats,
    redacted: dict[str, dict[str, int]],
) -> Any:
    if isinstance(value, str):
        text, counts = _redact_field(engine, path, value, stats)
        if counts is None:
            redacted[path] = {"WITHHELD": 1}
        elif counts:
            redacted[path] = counts
        return text
    if isinstance(value, list):
        return [_redact_value(engine, f"{path}[{i}]", v, policy, stats, redacted) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _redact_value(engine, f"{path}.{k}", v, policy, stats, redacted) for k, v in value.items()}
    return value


def build_event(
    mapped: MappedRecord, ctx: BatchContext, engine: TextRedactor | None, policy: TransformPolicy, stats: TransformStats
) -> CanonicalEvent:
    content: dict[str, str] = {}
    redacted: dict[str, dict[str, int]] = {}
    for name, text in mapped.raw_content.items():
        masked, counts = _redact_field(engine, name, text, stats)
        content[name] = masked
        if counts is None:
            redacted[name] = {"WITHHELD": 1}
        elif counts:
            redacted[name] = counts
    attributes = {
        key: _redact_value(engine, f"attributes.{key}", value, policy, stats, redacted)
        for key, value in mapped.other_attributes.items()
    }
    return CanonicalEvent(
        event_id=mapped.event_id,
        tenant_id=ctx.tenant,
        org_id=ctx.org,
        license_id=ctx.license_id,
        received_at=ctx.received_at,
        content=content,
        content_lengths=mapped.content_lengths,
        redacted_fields=redacted,
        content_captured=bool(mapped.raw_content),
        attributes=attributes,
        batch_id=ctx.batch_id,
        **mapped.columns,
    )


def transform_batch(
    batch: RawBatch,
    engines: EngineLookup,
    policy: TransformPolicy,
    stats: TransformStats,
) -> Iterator[CanonicalEvent]:
    """Yields one canonical event per kept record, in the batch's order; ``batch`` comes from
    ``shared.messages.raw_batch.decode``, which checked its headers and its authentication."""
    ctx = BatchContext.of(batch)
    engine = engines.engine_for(ctx.tenant)
    encoding = batch.encoding
    try:
        request = otlp.decode_request(batch.payload, encoding, otlp.ExportLogsServiceRequest)
    except otlp.PayloadError:
        # The decoder's own message may quote the payload; the reason names the failure only.
        raise BatchRejected(f"payload is not an OTLP logs request in {encoding.value}") from None
    for resource_logs in request.resource_logs:
        resource = attributes_of(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                stats.records_in += 1
                mapped = map_record(
                    record,
                    resource,
                    tenant=ctx.tenant,
                    org=ctx.org,
                    plane_by_service=policy.plane_by_service,
                    default_plane=policy.default_plane,
                    keep_unknown_attributes=policy.keep_unknown_attributes,
                    received_at=ctx.received_at,
                )
                if mapped.event_type not in AUDITED_EVENTS:
                    if not policy.keep_other_events and mapped.event_type != "assistant_response":
                        stats.dropped_other += 1
                        continue
                    if mapped.event_type not in DOCUMENTED_EVENTS:
                        stats.other_kept += 1
                stats.events_out += 1
                yield build_event(mapped, ctx, engine, policy, stats)
