"""OTLP log record -> canonical event. Pure functions of the record, its resource and the batch headers.

The mapping never trusts telemetry for tenancy: tenant and org come from the licence headers.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from json.encoder import encode_basestring_ascii as _json_string  # what json.dumps writes for a str
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from shared.canonical import BIGINT_RANGE, CONTENT_FIELDS, COST_LIMIT, COST_SCALE, INTEGER_RANGE

AUDITED_EVENTS = frozenset({"user_prompt", "tool_result", "tool_decision", "api_request", "api_error"})
# Events the product documents besides the audited five; anything else is "unknown" for the metrics.
DOCUMENTED_EVENTS = AUDITED_EVENTS | frozenset({"assistant_response"})
EVENT_PREFIXES = ("claude_code.", "cowork.", "claude_code_desktop.")
NOT_CAPTURED = "<REDACTED>"
# What an event name may look like; anything else is content.
EVENT_NAME = re.compile(r"[a-z_.]{1,64}")

# Attributes that become columns; everything else is "other" and follows the attribute policy.
_MAPPED_ATTRIBUTES = frozenset(
    {
        "event.name",
        "event.timestamp",
        "event.sequence",
        "session.id",
        "prompt.id",
        "user.email",
        "user.id",
        "user.account_uuid",
        "organization.id",
        "model",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_creation_tokens",
        "cost_usd",
        "cost_usd_micros",
        "duration_ms",
        "decision",
        "source",
        "tool_name",
        "success",
        "status_code",
        "attempt",
        *CONTENT_FIELDS,
        "prompt_text",
        "prompt_length",
        "response_length",
        "tool_input_size_bytes",
    }
)
_LENGTH_ATTRIBUTES = {"prompt": "prompt_length", "response": "response_length", "tool_input": "tool_input_size_bytes"}


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":  # most attributes: looked at first
        return value.string_value
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return bytes_value(value.bytes_value)
    if kind == "double_value" and not math.isfinite(value.double_value):
        return str(value.double_value)  # JSON has no NaN or infinity; keep what was sent, as text
    return getattr(value, kind)


def bytes_value(raw: bytes) -> str:
    """Bytes that are UTF-8 text are that text (and scanned as such); other bytes are withheld, not stored as
    hex, where no recognizer could see what they spell."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"[{len(raw)} bytes withheld: not UTF-8 text]"


def attributes_of(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for pair in pairs:
        value = pair.value
        # Most values are non-empty strings, and a non-empty string_value is the one member of the oneof set:
        # read it first, without asking which member is set.
        attributes[pair.key] = value.string_value or any_value(value)
    return attributes


# Resource attributes that become columns; the others are kept as ``resource.<key>`` attributes.
_RESOURCE_COLUMNS = frozenset({"service.name", "service.version"})


@dataclass(frozen=True)
class ResourceView:
    """A resource's attributes and what every record of it derives from them, computed once per resource
    rather than once per record: its canonical bytes (bound into each event id, and a hash already fed them),
    its ``resource.*`` attributes and the columns read from it (service; user and org for a record that has
    none of its own)."""

    attributes: Mapping[str, Any]
    canonical_bytes: bytes
    other_attributes: Mapping[str, Any]
    content_hash: Any  # hashlib's sha256, fed ``canonical_bytes``: copied for each record's content hash
    service_name: str | None
    service_version: str | None
    user_email: str | None
    user_id: str | None
    user_account_uuid: str | None
    organization_id: str | None

    @classmethod
    def of(cls, attributes: Mapping[str, Any]) -> ResourceView:
        canonical_bytes = json.dumps(attributes, sort_keys=True, default=str).encode()
        return cls(
            attributes,
            canonical_bytes,
            {f"resource.{key}": value for key, value in attributes.items() if key not in _RESOURCE_COLUMNS},
            hashlib.sha256(canonical_bytes),
            as_str(attributes.get("service.name")),
            as_str(attributes.get("service.version")),
            as_str(attributes.get("user.email")),
            as_str(attributes.get("user.id")),
            as_str(attributes.get("user.account_uuid")),
            as_str(attributes.get("organization.id")),
        )


def as_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if isinstance(value, int | float) else json.dumps(value, sort_keys=True)


def as_int(value: Any, within: range = BIGINT_RANGE) -> int | None:
    """Strings, ints, doubles and bools arrive interchangeably; anything unreadable becomes None, and so does
    a number its column cannot hold, which would otherwise keep the whole event out of the audit log."""
    number = _as_any_int(value)
    return number if number is not None and number in within else None


def _as_any_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None
            return int(number) if math.isfinite(number) else None
    return None


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"true", "1", "yes"}:
            return True
        if lowered in {"false", "0", "no"}:
            return False
    return None


def as_cost(micros: Any, usd: Any) -> Decimal | None:
    """Prefer integer micro-dollars: a double such as 0.00685 is not exact."""
    micro_value = as_int(micros)
    if micro_value is not None:
        return _storable_cost(Decimal(micro_value) / Decimal(1_000_000))
    if usd is None or isinstance(usd, bool):
        return None
    try:
        cost = Decimal(str(usd))
    except InvalidOperation:
        return None
    return _storable_cost(cost) if cost.is_finite() else None


def _storable_cost(cost: Decimal) -> Decimal | None:
    """None for a cost the column cannot hold, rather than an event that cannot be stored at all."""
    if abs(cost) >= COST_LIMIT:  # checked first: quantizing a huge number needs more digits than a Decimal has
        return None
    stored = cost.quantize(COST_SCALE)
    return stored if abs(stored) < COST_LIMIT else None


def event_time_of(attrs: Mapping[str, Any], record: LogRecord, fallback: datetime) -> datetime:
    stamp = attrs.get("event.timestamp")
    if isinstance(stamp, str):
        try:
            parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    nanos = record.time_unix_nano or record.observed_time_unix_nano
    if nanos:
        return datetime.fromtimestamp(nanos / 1e9, UTC)
    # A record with no time at all is still evidence; receipt time is the best we know.
    return fallback


def _unprefixed(name: str) -> str:
    for prefix in EVENT_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


# Texts that named an event, and that name (``_unprefixed(text.strip())``): a deployment sends a handful. Only
# name-shaped results are kept, so no content (a body such as "my ssn is ...") stays in memory here.
_NAMES: dict[str, str] = {}
_MAX_NAMES = 1024


def _bare(text: str) -> str:
    bare = _NAMES.get(text)
    return _unprefixed(text.strip()) if bare is None else bare


def event_type_of(attrs: Mapping[str, Any], record: LogRecord) -> str:
    """The event's name, only ever a known name or one shaped like a name (``[a-z_.]{1,64}``).

    Anything else (a body such as "my ssn is ...", a mangled ``event.name``) is not a name but content:
    the event is "unknown" and ``stray_text_of`` hands that text to redaction.
    """
    name = attrs.get("event.name") or record.event_name  # a str: record.event_name is one
    if not name:
        name = record.body.string_value  # "" unless the body is a string
    text = name if type(name) is str else str(name or "")
    known = _NAMES.get(text)
    if known is not None:
        return known
    bare = _unprefixed(text.strip())
    if not EVENT_NAME.fullmatch(bare):
        return "unknown"
    if len(_NAMES) < _MAX_NAMES:
        _NAMES[text] = bare
    return bare


def stray_text_of(attrs: Mapping[str, Any], record: LogRecord, event_type: str) -> dict[str, str]:
    """Text that named no event: a string body that is not the event's name, an ``event.name`` that is not
    shaped like one. It is content (redacted like a prompt), never a column."""
    stray: dict[str, str] = {}
    named = attrs.get("event.name") or record.event_name
    if named and _bare(named if type(named) is str else str(named)) != event_type:
        stray["event_name"] = as_str(named) or ""
    body = record.body.string_value  # "" unless the body is a string
    if body and _bare(body) != event_type:
        stray["body"] = body
    return stray


def derive_event_id(
    tenant: str,
    event_type: str,
    attrs: Mapping[str, Any],
    record: LogRecord,
    resource: Mapping[str, Any] | ResourceView,
) -> str:
    """The same event gets the same id whenever it is resent or replayed; a different event never does.

    The id binds the event's content (the record's deterministic protobuf bytes and its resource), so a
    client's retry of the same bytes deduplicates, while a different event that claims the same session and
    sequence gets an id of its own: both are kept, and the signer flags them ``sequence_conflict``.
    """
    view = resource if isinstance(resource, ResourceView) else ResourceView.of(resource)
    return _event_id(tenant, event_type, as_str(attrs.get("session.id")), as_int(attrs.get("event.sequence")),
                     record, view)


def _event_id(
    tenant: str, event_type: str, session: str | None, sequence: int | None, record: LogRecord, view: ResourceView
) -> str:
    record_bytes = record.SerializeToString(deterministic=True)
    if session and sequence is not None:
        content_hash = view.content_hash.copy()
        content_hash.update(record_bytes)
        # json.dumps(["v2-seq", tenant, session, sequence, event_type, content]), written out: its separators
        # and its ASCII escaping of the strings, the sequence an int (``as_int`` never returns a bool).
        key = (f'["v2-seq", {_json_string(tenant)}, {_json_string(session)}, {int.__repr__(sequence)}, '
               f'{_json_string(event_type)}, "{content_hash.hexdigest()}"]')
        return hashlib.sha256(key.encode()).hexdigest()
    # Events without a session and sequence keep the ids they always had.
    return hashlib.sha256(
        b"v1-content\x00" + tenant.encode() + b"\x00" + view.canonical_bytes + record_bytes
    ).hexdigest()


@dataclass
class MappedRecord:
    """A record mapped but not yet redacted: raw content and other string attributes still in clear."""

    event_type: str
    event_id: str
    columns: dict[str, Any]
    raw_content: dict[str, str]
    content_lengths: dict[str, int]
    # The record's own attributes that are no column; then its resource's (``resource.<key>``), shared by
    # every record of that resource and not to be modified. Both are empty under the "drop" attribute policy.
    other_attributes: dict[str, Any] = field(default_factory=dict)
    resource_attributes: Mapping[str, Any] = field(default_factory=dict)

    def all_other_attributes(self) -> dict[str, Any]:
        """Every attribute that is no column, as stored: a resource attribute wins over a record attribute
        that happens to have its ``resource.<key>`` name."""
        return {**self.other_attributes, **self.resource_attributes}


@dataclass(frozen=True)
class RecordContext:
    """What the mapping of a record takes from its batch (the licence's tenant and org, the receipt time)
    and from the configuration: the same for every record of a batch."""

    tenant: str
    org: str
    plane_by_service: Mapping[str, str]
    default_plane: str
    keep_unknown_attributes: bool
    received_at: datetime


def map_record(
    record: LogRecord,
    resource: Mapping[str, Any],
    *,
    tenant: str,
    org: str,
    plane_by_service: Mapping[str, str],
    default_plane: str,
    keep_unknown_attributes: bool,
    received_at: datetime,
) -> MappedRecord:
    context = RecordContext(tenant, org, plane_by_service, default_plane, keep_unknown_attributes, received_at)
    return map_attributes(record, attributes_of(record.attributes), ResourceView.of(resource), context)


def _as_integer_column(value: Any) -> int | None:
    return as_int(value, INTEGER_RANGE)


# Attributes that each become one column through one conversion, and that column; the conversions take None
# to None, so a column whose attribute is absent is None without being converted.
_COLUMN_OF_ATTRIBUTE: Mapping[str, tuple[str, Callable[[Any], Any]]] = {
    "session.id": ("session_id", as_str),
    "prompt.id": ("correlation_id", as_str),
    "event.sequence": ("event_sequence", as_int),
    "model": ("model", as_str),
    "input_tokens": ("input_tokens", as_int),
    "output_tokens": ("output_tokens", as_int),
    "cache_read_tokens": ("cache_read_tokens", as_int),
    "cache_creation_tokens": ("cache_creation_tokens", as_int),
    "duration_ms": ("duration_ms", as_int),
    "decision": ("decision", as_str),
    "source": ("decision_source", as_str),
    "tool_name": ("tool_name", as_str),
    "success": ("success", as_bool),
    "status_code": ("status_code", _as_integer_column),
    "attempt": ("attempt", _as_integer_column),
}
# Each content field and the attribute declaring its length ("" for none: a record's attribute with an empty
# key then declares it, as it always has).
_CONTENT_AND_LENGTH = tuple((name, _LENGTH_ATTRIBUTES.get(name, "")) for name in CONTENT_FIELDS)


def _content_of(attrs: Mapping[str, Any], record: LogRecord, event_type: str) -> tuple[dict[str, str], dict[str, int]]:
    """The record's content (still in clear) and the lengths of its content fields."""
    get = attrs.get
    raw_content: dict[str, str] = stray_text_of(attrs, record, event_type)
    lengths: dict[str, int] = {name: len(text) for name, text in raw_content.items()}
    for name, length_attribute in _CONTENT_AND_LENGTH:
        value = get(name)
        if value is None and name == "prompt":
            value = get("prompt_text")
        text = None if value is None else as_str(value)
        captured_length = None
        if text is not None and text != NOT_CAPTURED:
            raw_content[name] = text
            captured_length = len(text)
        declared = get(length_attribute)
        declared_length = None if declared is None else as_int(declared)
        if declared_length is not None:
            lengths[name] = declared_length
        elif captured_length is not None:
            lengths[name] = captured_length
    return raw_content, lengths


def map_attributes(
    record: LogRecord, attrs: Mapping[str, Any], view: ResourceView, context: RecordContext,
    event_type: str | None = None,
) -> MappedRecord:
    """``map_record`` for a record whose attributes are already read (``attributes_of``), with its resource's
    view made once for all its records; ``event_type``: ``event_type_of`` the record, if already known.

    One pass over the record's attributes converts those that are a column each and collects the others."""
    get = attrs.get
    if event_type is None:
        event_type = event_type_of(attrs, record)
    claimed = get("organization.id")
    claimed_org = as_str(claimed) if claimed else view.organization_id
    email, user_id, account = get("user.email"), get("user.id"), get("user.account_uuid")
    service_name = view.service_name
    columns: dict[str, Any] = {
        "plane": context.plane_by_service.get(service_name or "", context.default_plane),
        "event_type": event_type,
        "event_time": event_time_of(attrs, record, context.received_at),
        "session_id": None,
        "correlation_id": None,
        "event_sequence": None,
        "user_email": as_str(email) if email else view.user_email,
        "user_id": as_str(user_id) if user_id else view.user_id,
        "user_account_uuid": as_str(account) if account else view.user_account_uuid,
        "claimed_org_id": claimed_org,
        "claimed_org_mismatch": claimed_org is not None and claimed_org != context.org,
        "service_name": service_name,
        "service_version": view.service_version,
        "model": None,
        "input_tokens": None,
        "output_tokens": None,
        "cache_read_tokens": None,
        "cache_creation_tokens": None,
        "tokens_used": None,
        "cost": None,
        "duration_ms": None,
        "decision": None,
        "decision_source": None,
        "tool_name": None,
        "success": None,
        "status_code": None,
        "attempt": None,
    }
    keep_unknown_attributes = context.keep_unknown_attributes
    other: dict[str, Any] = {}
    for key, value in attrs.items():
        column = _COLUMN_OF_ATTRIBUTE.get(key)
        if column is not None:
            columns[column[0]] = column[1](value)
        elif keep_unknown_attributes and key not in _MAPPED_ATTRIBUTES:
            other[key] = value
    token_parts = [t for t in (columns["input_tokens"], columns["output_tokens"], columns["cache_read_tokens"],
                               columns["cache_creation_tokens"]) if t is not None]
    if token_parts:
        columns["tokens_used"] = as_int(sum(token_parts))
    micros, usd = get("cost_usd_micros"), get("cost_usd")
    if micros is not None or usd is not None:
        columns["cost"] = as_cost(micros, usd)
    raw_content, lengths = _content_of(attrs, record, event_type)
    resource_other: Mapping[str, Any] = {}
    if keep_unknown_attributes:
        prompt_text = get("prompt_text")
        if prompt_text is not None and prompt_text != get("prompt"):
            other["prompt_text"] = prompt_text
        resource_other = view.other_attributes
    return MappedRecord(
        event_type=event_type,
        event_id=_event_id(context.tenant, event_type, columns["session_id"], columns["event_sequence"], record,
                           view),
        columns=columns,
        raw_content=raw_content,
        content_lengths=lengths,
        other_attributes=other,
        resource_attributes=resource_other,
    )
