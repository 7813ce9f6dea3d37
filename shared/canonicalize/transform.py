"""Raw OTLP batch -> redacted canonical events. Synchronous and pure but for the PII engine it is given."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from shared import otlp
from shared.canonical import WITHHELD_MARKER, CanonicalEvent
from shared.canonicalize.mapping import AUDITED_EVENTS, DOCUMENTED_EVENTS, MappedRecord, attributes_of, map_record
from shared.messages.raw_batch import RawBatch

log = logging.getLogger("redactor")


class TextRedactor(Protocol):
    """The PII engine as the transform sees it; raising means detection is unavailable for this field."""

    def redact_text(self, text: str) -> Any: ...

    def redact_json_text(self, text: str) -> Any: ...


class BatchMemo:
    """The engine for one raw batch, answering a short text it has already scanned in this batch from memory.

    Every record of a batch repeats its resource's attributes (``resource.*``: host, user, OS) and many of
    its own (session, terminal, version): these are scanned once per batch instead of once per record. The
    answer for a text is the engine's answer for it, so nothing changes but the work; a scan that raised is
    not remembered. Long texts (prompts, tool input) are rarely repeated and are not kept.
    """

    MAX_TEXT = 512
    MAX_ENTRIES = 4096

    def __init__(self, engine: TextRedactor) -> None:
        self._engine = engine
        self._text: dict[str, Any] = {}
        self._json: dict[str, Any] = {}

    def redact_text(self, text: str) -> Any:
        return self._remembered(self._text, self._engine.redact_text, text)

    def redact_json_text(self, text: str) -> Any:
        return self._remembered(self._json, self._engine.redact_json_text, text)

    def _remembered(self, memo: dict[str, Any], scan: Any, text: str) -> Any:
        found = memo.get(text)
        if found is not None:
            return found
        result = scan(text)
        if len(text) <= self.MAX_TEXT and len(memo) < self.MAX_ENTRIES:
            memo[text] = result
        return result


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
        out: dict[str, Any] = {}
        for key, item in value.items():
            safe_key = _redact_key(engine, path, key, out, stats, redacted)
            out[safe_key] = _redact_value(engine, f"{path}.{safe_key}", item, policy, stats, redacted)
        return out
    return value


def _redact_key(
    engine: TextRedactor | None, path: str, key: str, taken: dict[str, Any], stats: TransformStats,
    redacted: dict[str, dict[str, int]],
) -> str:
    """An attribute key is text the client chose: scanned like a value (``{"jane@acme.com": 1}``). A masked
    or withheld key gets a number when another key already has its text, so no value is lost."""
    masked, counts = _redact_field(engine, f"{path}.<key>", key, stats)
    if counts is None:
        redacted[f"{path}.<key>"] = {"WITHHELD": redacted.get(f"{path}.<key>", {}).get("WITHHELD", 0) + 1}
        masked = "[key withheld: detection unavailable]"
    elif counts:
        previous = redacted.setdefault(f"{path}.<key>", {})
        for kind, n in counts.items():
            previous[kind] = previous.get(kind, 0) + n
    if masked != key:
        base, number = masked, 2
        while masked in taken:
            masked, number = f"{base}#{number}", number + 1
    return masked


_UUID_OR_ID = re.compile(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|[0-9a-f]{16,128}"
)
# Promoted string columns and the shape that proves a value of them is an identifier and nothing else
# (docs/redaction.md gives the reasoning). Every value is scanned like content all the same; the shape decides
# what happens when detection is unavailable: a proven identifier is kept, anything else is withheld.
# user_email is the user's identity by design and is kept as it is; event_type and plane are checked by the
# mapping (a known or name-shaped event name, a plane from the configuration).
IDENTIFIER_COLUMNS: Mapping[str, re.Pattern[str]] = {
    "session_id": _UUID_OR_ID,
    "correlation_id": _UUID_OR_ID,
    "user_id": _UUID_OR_ID,
    "user_account_uuid": _UUID_OR_ID,
    "claimed_org_id": _UUID_OR_ID,
    "service_name": re.compile(r"[a-z][a-z0-9_.-]{0,63}"),
    "service_version": re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,6}){0,3}(?:[-+][0-9A-Za-z.]{1,32})?"),
    "model": re.compile(r"[a-z][a-z0-9._:/@\[\]-]{0,127}"),
    "decision": re.compile(r"[a-z_]{1,32}"),
    "decision_source": re.compile(r"[a-z_]{1,32}"),
    "tool_name": re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}"),
}


def _checked_columns(
    engine: TextRedactor | None, columns: Mapping[str, Any], stats: TransformStats,
    redacted: dict[str, dict[str, int]],
) -> dict[str, Any]:
    checked = dict(columns)
    for name, shape in IDENTIFIER_COLUMNS.items():
        value = checked.get(name)
        if not isinstance(value, str):
            continue
        masked, counts = _redact_field(engine, f"columns.{name}", value, stats)
        if counts is None:
            # Detection unavailable: only a value whose shape proves it an identifier is kept.
            if not shape.fullmatch(value):
                redacted[f"columns.{name}"] = {"WITHHELD": 1}
                checked[name] = None
            else:
                stats.withheld_fields -= 1  # kept, not withheld
        elif counts:
            redacted[f"columns.{name}"] = counts
            checked[name] = masked
    return checked


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
    attributes = _redact_value(engine, "attributes", mapped.other_attributes, policy, stats, redacted)
    columns = _checked_columns(engine, mapped.columns, stats, redacted)
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
        **columns,
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
    tenant_engine = engines.engine_for(ctx.tenant)
    engine = BatchMemo(tenant_engine) if tenant_engine is not None else None
    encoding = batch.encoding
    try:
        request = otlp.decode_request(batch.payload, encoding, otlp.ExportLogsServiceRequest)
    except otlp.PayloadError as exc:  # its message names the kind and position of the fault, never the text
        raise BatchRejected(str(exc)) from None
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
