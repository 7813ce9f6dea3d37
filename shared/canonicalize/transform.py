"""Raw OTLP batch -> redacted canonical events. Synchronous and pure but for the PII engine it is given."""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from shared import otlp
from shared.canonical import WITHHELD_MARKER, CanonicalEvent
from shared.canonicalize.mapping import (
    AUDITED_EVENTS,
    DOCUMENTED_EVENTS,
    MappedRecord,
    RecordContext,
    ResourceView,
    attributes_of,
    event_type_of,
    map_attributes,
)
from shared.messages.raw_batch import RawBatch

log = logging.getLogger("redactor")


class TextRedactor(Protocol):
    """The PII engine as the transform sees it; raising means detection is unavailable for this field."""

    def redact_text(self, text: str) -> Any: ...

    def redact_json_text(self, text: str) -> Any: ...


class _CleanTexts:
    """Per engine, the short texts it found nothing in (scanned as plain text), kept across batches."""

    # Bounded in characters, then forgotten all at once (a text of up to BatchMemo.MAX_TEXT each).
    MAX_CHARS = 1024 * 1024

    def __init__(self) -> None:
        self.texts: set[str] = set()
        self.chars = 0

    def add(self, text: str) -> None:
        if self.chars + len(text) > self.MAX_CHARS:
            self.texts.clear()
            self.chars = 0
        self.texts.add(text)
        self.chars += len(text)


_CLEAN_BY_ENGINE: weakref.WeakKeyDictionary[Any, _CleanTexts] = weakref.WeakKeyDictionary()


def _clean_texts_of(engine: TextRedactor) -> _CleanTexts:
    try:
        found = _CLEAN_BY_ENGINE.get(engine)
        if found is None:
            found = _CLEAN_BY_ENGINE[engine] = _CleanTexts()
        return found
    except TypeError:  # an engine that cannot be referred to weakly: remembered for this batch only
        return _CleanTexts()


class BatchMemo:
    """The engine for one raw batch, answering a short text it has already scanned in this batch from memory.

    Every record of a batch repeats its resource's attributes (``resource.*``: host, user, OS) and many of
    its own (session, terminal, version): these are scanned once per batch instead of once per record. The
    answer for a text is the engine's answer for it, so nothing changes but the work; a scan that raised is
    not remembered. Long texts (prompts, tool input) are rarely repeated and are not kept. Short texts the
    engine found nothing in (attribute keys, "xterm", a model name) are remembered across batches, per
    engine: nothing of a text with findings is kept beyond its batch.
    """

    MAX_TEXT = 512
    MAX_ENTRIES = 4096

    def __init__(self, engine: TextRedactor) -> None:
        self._engine = engine
        self._text: dict[str, Any] = {}
        self._json: dict[str, Any] = {}
        self._fields: dict[tuple[str, bool], tuple[str, dict[str, int]]] = {}
        self._clean = _clean_texts_of(engine)
        # Short texts scanned as plain text (not JSON) in which the engine found nothing: attribute keys and
        # values, identifiers. The transform stores these as they are without asking again.
        self.clean: set[str] = self._clean.texts

    def redact_text(self, text: str) -> Any:
        return self._remembered(self._text, self._engine.redact_text, text)

    def redact_json_text(self, text: str) -> Any:
        return self._remembered(self._json, self._engine.redact_json_text, text)

    def redact_field(self, text: str, as_json: bool) -> tuple[str, dict[str, int]]:
        """The masked text and what was masked in it (kinds found at least once); raises as the engine does.
        The counts are shared by every caller that asked for the same text: copy them to keep them."""
        if not as_json and text in self.clean:
            return text, {}
        key = (text, as_json)
        found = self._fields.get(key)
        if found is not None:
            return found
        result = self._engine.redact_json_text(text) if as_json else self._engine.redact_text(text)
        answer = (str(result.text), {kind: int(n) for kind, n in result.counts.items() if n})
        if len(text) <= self.MAX_TEXT:
            if not as_json and not answer[1] and answer[0] == text:
                self._clean.add(text)
            elif len(self._fields) < self.MAX_ENTRIES:
                self._fields[key] = answer
        return answer

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
    engine: BatchMemo | None, name: str, text: str, stats: TransformStats
) -> tuple[str, dict[str, int] | None]:
    """Fail closed: if detection is off, raises, or runs over budget, the content is withheld.

    The counts returned are shared with the batch's memory: a caller that keeps them keeps a copy."""
    if engine is None:
        stats.withheld_fields += 1
        return WITHHELD_MARKER, None
    try:
        masked, counts = engine.redact_field(text, name in JSON_CONTENT_FIELDS)
    except Exception as exc:
        stats.withheld_fields += 1
        log.warning("detection unavailable, content withheld", extra={"field": name, "error": type(exc).__name__})
        return WITHHELD_MARKER, None
    if counts:
        redactions = stats.redactions
        for kind, n in counts.items():
            redactions[kind] = redactions.get(kind, 0) + n
    return masked, counts


def _redact_value(
    engine: BatchMemo | None,
    path: str,
    value: Any,
    stats: TransformStats,
    redacted: dict[str, dict[str, int]],
) -> Any:
    if isinstance(value, str):
        text, counts = _redact_field(engine, path, value, stats)
        if counts is None:
            redacted[path] = {"WITHHELD": 1}
        elif counts:
            redacted[path] = dict(counts)
        return text
    if isinstance(value, list):
        return [_redact_value(engine, f"{path}[{i}]", v, stats, redacted) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return _redact_items(engine, path, value, {}, stats, redacted)
    return value


_NOTHING_CLEAN: frozenset[str] = frozenset()


def _redact_items(
    engine: BatchMemo | None,
    path: str,
    items: Mapping[str, Any],
    out: dict[str, Any],
    stats: TransformStats,
    redacted: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """Adds ``items`` to ``out`` with their keys and values redacted; a masked key that another key of
    ``out`` already has gets a number."""
    clean = engine.clean if engine is not None else _NOTHING_CLEAN
    for key, item in items.items():
        if key in clean:
            # The key was scanned in this batch and nothing found, so it stays as it is (and is not numbered);
            # so does a value that is no text, or a text scanned clean too.
            if isinstance(item, str):
                if item in clean:
                    out[key] = item
                    continue
            elif not isinstance(item, list | dict):
                out[key] = item
                continue
            # Only the value is to be scanned: asking again for the key would get the remembered answer, the
            # key as it is with nothing found (what is clean is remembered), which changes nothing.
            safe_key = key
        else:
            safe_key = _redact_key(engine, path, key, out, stats, redacted)
        out[safe_key] = _redact_value(engine, f"{path}.{safe_key}", item, stats, redacted)
    return out


def _redact_key(
    engine: BatchMemo | None, path: str, key: str, taken: dict[str, Any], stats: TransformStats,
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


@dataclass(frozen=True)
class ResourceAttributes:
    """A resource's ``resource.*`` attributes, redacted once for every record of the batch that carries them.

    An attribute whose key and value the engine scanned and found nothing in is ``clean``: every record
    stores it as it is. Any other (something masked, detection unavailable) is redacted record by record as
    before, so each event's ``redacted_fields`` and the counts stay what they were.
    """

    entries: tuple[tuple[str, Any, bool], ...]  # (key, value, clean), in the resource's order
    keys: frozenset[str]
    # When every entry is clean: the entries as a dict, which a record's attributes are updated with at once.
    all_clean: Mapping[str, Any] | None = None

    @classmethod
    def scan(
        cls, engine: BatchMemo | None, attributes: Mapping[str, Any]
    ) -> ResourceAttributes:
        entries = []
        for key, value in attributes.items():
            trial_stats = TransformStats()
            trial_redacted: dict[str, dict[str, int]] = {}
            safe_key = _redact_key(engine, "attributes", key, {}, trial_stats, trial_redacted)
            safe_value = _redact_value(engine, f"attributes.{safe_key}", value, trial_stats, trial_redacted)
            clean = safe_key == key and not trial_redacted and not trial_stats.withheld_fields \
                and not trial_stats.redactions
            entries.append((key, safe_value if clean else value, clean))
        all_clean = {key: value for key, value, _ in entries} if all(clean for _, _, clean in entries) else None
        return cls(tuple(entries), frozenset(attributes), all_clean)


def _redact_attributes(
    engine: BatchMemo | None, mapped: MappedRecord, resource: ResourceAttributes | None, stats: TransformStats,
    redacted: dict[str, dict[str, int]],
) -> dict[str, Any]:
    own = mapped.other_attributes
    if resource is None or not resource.keys.isdisjoint(own):
        # A record attribute with the name of a resource one: the merged map, as stored, redacted as a whole.
        return _redact_items(engine, "attributes", mapped.all_other_attributes(), {}, stats, redacted)
    out = _redact_items(engine, "attributes", own, {}, stats, redacted) if own else {}
    if resource.all_clean is not None:
        out.update(resource.all_clean)  # what the loop below does when every entry is clean
        return out
    for key, value, clean in resource.entries:
        if clean:
            # Scanned for this batch and nothing found. Stored as the record-by-record walk would: a key the
            # engine leaves as it is replaces whatever ``out`` holds under that text, without a number.
            out[key] = value
        else:
            safe_key = _redact_key(engine, "attributes", key, out, stats, redacted)
            out[safe_key] = _redact_value(engine, f"attributes.{safe_key}", value, stats, redacted)
    return out


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


def _check_identifier_columns(
    engine: BatchMemo | None, values: dict[str, Any], stats: TransformStats, redacted: dict[str, dict[str, int]]
) -> None:
    """Scans the promoted string columns of ``values`` (an event's fields) and masks or withholds them there."""
    clean = engine.clean if engine is not None else _NOTHING_CLEAN
    for name, shape in IDENTIFIER_COLUMNS.items():
        value = values[name]
        if not isinstance(value, str) or value in clean:
            continue
        masked, counts = _redact_field(engine, f"columns.{name}", value, stats)
        if counts is None:
            # Detection unavailable: only a value whose shape proves it an identifier is kept.
            if not shape.fullmatch(value):
                redacted[f"columns.{name}"] = {"WITHHELD": 1}
                values[name] = None
            else:
                stats.withheld_fields -= 1  # kept, not withheld
        elif counts:
            redacted[f"columns.{name}"] = dict(counts)
            values[name] = masked


def build_event(
    mapped: MappedRecord, ctx: BatchContext, engine: BatchMemo | None, stats: TransformStats,
    resource: ResourceAttributes | None = None,
) -> CanonicalEvent:
    """``resource``: the record's ``resource.*`` attributes as scanned for its batch (None: scanned here)."""
    content: dict[str, str] = {}
    redacted: dict[str, dict[str, int]] = {}
    for name, text in mapped.raw_content.items():
        masked, counts = _redact_field(engine, name, text, stats)
        content[name] = masked
        if counts is None:
            redacted[name] = {"WITHHELD": 1}
        elif counts:
            redacted[name] = dict(counts)
    attributes = _redact_attributes(engine, mapped, resource, stats, redacted)
    columns = mapped.columns
    # Every field of the event, in the order of its fields (``CanonicalEvent.from_fields``).
    values: dict[str, Any] = {
        "event_id": mapped.event_id,
        "tenant_id": ctx.tenant,
        "org_id": ctx.org,
        "license_id": ctx.license_id,
        "plane": columns["plane"],
        "event_type": columns["event_type"],
        "event_time": columns["event_time"],
        "received_at": ctx.received_at,
        "session_id": columns["session_id"],
        "correlation_id": columns["correlation_id"],
        "event_sequence": columns["event_sequence"],
        "user_email": columns["user_email"],
        "user_id": columns["user_id"],
        "user_account_uuid": columns["user_account_uuid"],
        "claimed_org_id": columns["claimed_org_id"],
        "claimed_org_mismatch": columns["claimed_org_mismatch"],
        "service_name": columns["service_name"],
        "service_version": columns["service_version"],
        "model": columns["model"],
        "input_tokens": columns["input_tokens"],
        "output_tokens": columns["output_tokens"],
        "cache_read_tokens": columns["cache_read_tokens"],
        "cache_creation_tokens": columns["cache_creation_tokens"],
        "tokens_used": columns["tokens_used"],
        "cost": columns["cost"],
        "duration_ms": columns["duration_ms"],
        "decision": columns["decision"],
        "decision_source": columns["decision_source"],
        "tool_name": columns["tool_name"],
        "success": columns["success"],
        "status_code": columns["status_code"],
        "attempt": columns["attempt"],
        "content": content,
        "content_lengths": mapped.content_lengths,
        "redacted_fields": redacted,
        "content_captured": bool(mapped.raw_content),
        "attributes": attributes,
        "batch_id": ctx.batch_id,
    }
    _check_identifier_columns(engine, values, stats, redacted)
    return CanonicalEvent.from_fields(values)


def _kept(event_type: str, policy: TransformPolicy, stats: TransformStats) -> bool:
    """Whether the other-event policy keeps an event of this type (counted either way)."""
    if event_type not in AUDITED_EVENTS:
        if not policy.keep_other_events and event_type != "assistant_response":
            stats.dropped_other += 1
            return False
        if event_type not in DOCUMENTED_EVENTS:
            stats.other_kept += 1
    return True


def transform_batch(
    batch: RawBatch,
    engines: EngineLookup,
    policy: TransformPolicy,
    stats: TransformStats,
) -> Iterator[CanonicalEvent]:
    """Yields one canonical event per kept record, in the batch's order; ``batch`` comes from
    ``shared.messages.raw_batch.decode``, which checked its headers and its authentication.

    Work is done once where it can be: a resource's attributes are read, serialised for the event ids and
    scanned once for all its records; a record the policy drops is not mapped beyond its event type."""
    ctx = BatchContext.of(batch)
    tenant_engine = engines.engine_for(ctx.tenant)
    engine = BatchMemo(tenant_engine) if tenant_engine is not None else None
    encoding = batch.encoding
    try:
        request = otlp.decode_request(batch.payload, encoding, otlp.ExportLogsServiceRequest)
    except otlp.PayloadError as exc:  # its message names the kind and position of the fault, never the text
        raise BatchRejected(str(exc)) from None
    record_context = RecordContext(ctx.tenant, ctx.org, policy.plane_by_service, policy.default_plane,
                                   policy.keep_unknown_attributes, ctx.received_at)
    for resource_logs in request.resource_logs:
        resource = ResourceView.of(attributes_of(resource_logs.resource.attributes))
        scanned_resource: ResourceAttributes | None = None
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                stats.records_in += 1
                attributes = attributes_of(record.attributes)
                event_type = event_type_of(attributes, record)
                if not _kept(event_type, policy, stats):
                    continue
                mapped = map_attributes(record, attributes, resource, record_context, event_type)
                if scanned_resource is None and mapped.resource_attributes:
                    scanned_resource = ResourceAttributes.scan(engine, mapped.resource_attributes)
                stats.events_out += 1
                yield build_event(mapped, ctx, engine, stats, scanned_resource)
