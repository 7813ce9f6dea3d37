"""Decoding a request body within a budget: what it may cost is settled before the costly part runs.

A body's cost is not its size. ``{"resourceLogs":[{},{},…]}`` is 1 MB of JSON (1 KB gzipped) that holds
no record at all, yet turning it into protobuf messages took a second of CPU on the event loop. So:

- **Shape first.** The cheap C parse (``json.loads``; upb for protobuf) runs, then the resource and scope
  entries are counted before anything costly. Every entry that carries nothing (a resource without scope
  entries, a scope without records) counts against the record limits like a record: more of them than a
  request may hold is a 400, and the tenant is charged for them all the same.
- **Bounded conversion.** JSON is cut to the records the request may keep before ``ParseDict`` (pure
  Python, the expensive step) sees it, so no body costs more conversion than ``max_records_per_request``
  honest records.
- **Off the loop.** Bodies over ``decode_off_loop_bytes`` are decoded on one dedicated worker thread:
  large decodes queue behind each other (one core's worth at most) while the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from dataclasses import dataclass
from typing import Any

from shared import otlp

# What json.loads allocates per object or array (a small dict or list and its slot in the parent), and how
# much of that an ordinary body gets for free: honest OTLP/JSON holds one container per 30-60 bytes.
JSON_CONTAINER_BYTES = 64
JSON_FREE_RATIO = 4

# One thread: large decodes run one at a time, so they can never take every core (or every GIL slice).
_LARGE_DECODES = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="otlp-decode")


@dataclass(frozen=True)
class Levels:
    """A signal's three levels, by their JSON names: group (resource) -> scope -> item."""

    groups: str
    scopes: str
    items: str
    truncate: bool  # items may be cut to the per-request cap (log records; not metrics)
    items_are_records: bool  # what the record limits count (log records; metrics hold data points instead)


LOG_LEVELS = Levels("resourceLogs", "scopeLogs", "logRecords", truncate=True, items_are_records=True)
METRIC_LEVELS = Levels("resourceMetrics", "scopeMetrics", "metrics", truncate=False, items_are_records=False)
_PROTO_NAMES = {
    "resourceLogs": "resource_logs", "scopeLogs": "scope_logs", "logRecords": "log_records",
    "resourceMetrics": "resource_metrics", "scopeMetrics": "scope_metrics", "metrics": "metrics",
}
_ALIASES = {name: (name, proto) for name, proto in _PROTO_NAMES.items()}


class TooManyEmptyEntries(otlp.PayloadError):
    """More resource/scope entries without content than the request may hold records."""


class TooManyEntries(otlp.PayloadError):
    """More entries (resources, scopes, records) than a request could ever have accepted in part."""


# Protobuf bodies larger than this are scanned (wire format, three levels) before upb builds any message:
# a megabyte of two-byte empty entries is half a million messages, some 30 MB once parsed.
PROTOBUF_SCAN_BYTES = 64 * 1024
# Entries beyond this many times the per-request cap are refused outright instead of parsed and cut.
ENTRY_CAP_FACTOR = 4


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise otlp.PayloadError("body is not a valid protobuf message (bad varint)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes, start: int, end: int, wanted: int) -> list[tuple[int, int]]:
    """(start, end) of each length-delimited field ``wanted`` in ``buf[start:end]``; other fields skipped."""
    found = []
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        wire = tag & 7
        if wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise otlp.PayloadError("body is not a valid protobuf message (truncated field)")
            if tag >> 3 == wanted:
                found.append((pos, pos + length))
            pos += length
        elif wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise otlp.PayloadError("body is not a valid OTLP protobuf message (unexpected wire type)")
    if pos != end:
        raise otlp.PayloadError("body is not a valid protobuf message (truncated)")
    return found


def protobuf_shape(body: bytes, cap: int) -> int:
    """Empty entries of an OTLP request's wire form (logs and metrics: fields 1 -> 2 -> 2), refusing before
    any message is built a body with more than ``cap`` empty entries or ENTRY_CAP_FACTOR x ``cap`` entries."""
    limit = ENTRY_CAP_FACTOR * cap + 1024
    entries = empty = 0
    for group_start, group_end in _fields(body, 0, len(body), 1):
        scopes = _fields(body, group_start, group_end, 2)
        entries += 1 + len(scopes)
        if not scopes:
            empty += 1
        for scope_start, scope_end in scopes:
            items = len(_fields(body, scope_start, scope_end, 2))
            entries += items
            if items == 0:
                empty += 1
        if empty > cap:
            raise TooManyEmptyEntries(_too_many(empty, cap))
        if entries > limit:
            raise TooManyEntries(f"more than {limit} resource, scope and record entries in one request "
                                 f"(at most {cap} records are accepted per request)")
    return empty


@dataclass(frozen=True)
class Decoded:
    request: Any
    empty_entries: int  # resource entries without scopes + scope entries without items
    items_before_cut: int  # items the body held (JSON logs are cut to the cap before conversion)
    records: int = -1  # records in ``request`` when the decoding counted them on its way (else -1)


def _entries(node: dict[str, Any], name: str) -> list[Any]:
    for key in _ALIASES[name]:  # ParseDict accepts both the JSON name and the proto field name
        value = node.get(key)
        if value is not None:
            if not isinstance(value, list):
                raise otlp.PayloadError(f"{name} must be a list")
            return value
    return []


def _json_shape(document: dict[str, Any], levels: Levels, cap: int) -> tuple[int, int]:
    """(empty entries, items) of a parsed JSON document, walking only the resource and scope levels."""
    empty = items = 0
    for group in _entries(document, levels.groups):
        if not isinstance(group, dict):
            raise otlp.PayloadError(f"{levels.groups} entries must be objects")
        scopes = _entries(group, levels.scopes)
        if not scopes:
            empty += 1
        for scope in scopes:
            if not isinstance(scope, dict):
                raise otlp.PayloadError(f"{levels.scopes} entries must be objects")
            count = len(_entries(scope, levels.items))
            if count == 0:
                empty += 1
            items += count
        if empty > cap:
            break  # already refused: no need to walk the rest
    return empty, items


def _cut_json(document: dict[str, Any], levels: Levels, keep: int) -> None:
    """Keep the first ``keep`` items, in order, with their resource and scope (as keep_first_log_records)."""
    remaining = keep
    groups = _entries(document, levels.groups)
    kept_groups = []
    for group in groups:
        if remaining <= 0:
            break
        kept_groups.append(group)
        scopes = _entries(group, levels.scopes)
        kept_scopes = []
        for scope in scopes:
            if remaining <= 0:
                break
            items = _entries(scope, levels.items)
            for key in _ALIASES[levels.items]:
                if key in scope:
                    scope[key] = items[:remaining]
            remaining -= min(len(items), remaining)
            kept_scopes.append(scope)
        for key in _ALIASES[levels.scopes]:
            if key in group:
                group[key] = kept_scopes
    for key in _ALIASES[levels.groups]:
        if key in document:
            document[key] = kept_groups


def _protobuf_entries(request: Any, levels: Levels, cap: int) -> tuple[int, int]:
    """(empty entries, items) of a parsed message; one walk over its resource and scope levels."""
    empty = items = 0
    scopes_field, items_field = _PROTO_NAMES[levels.scopes], _PROTO_NAMES[levels.items]
    for group in getattr(request, _PROTO_NAMES[levels.groups]):
        scopes = getattr(group, scopes_field)
        if not scopes:
            empty += 1
        for scope in scopes:
            count = len(getattr(scope, items_field))
            if not count:
                empty += 1
            items += count
        if empty > cap:
            break
    return empty, items


def decode_within_budget(
    body: bytes, encoding: otlp.Encoding, message_type: type[Any], levels: Levels, cap: int
) -> Decoded:
    """Decode, refusing (TooManyEmptyEntries) a body with more than ``cap`` empty entries before converting it."""
    if encoding is otlp.Encoding.PROTOBUF:
        if len(body) > PROTOBUF_SCAN_BYTES:
            protobuf_shape(body, cap)  # cheap, and refuses what upb would turn into millions of messages
        request = otlp.decode_request(body, encoding, message_type)
        empty, items = _protobuf_entries(request, levels, cap)
        if empty > cap:
            raise TooManyEmptyEntries(_too_many(empty, cap))
        return Decoded(request, empty, -1, items if levels.items_are_records else -1)
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise otlp.PayloadError(f"body is not valid JSON: {otlp.parse_error_summary(exc)}") from exc
    if not isinstance(document, dict):
        raise otlp.PayloadError("JSON body must be an object")
    empty, items = _json_shape(document, levels, cap)
    if empty > cap:
        raise TooManyEmptyEntries(_too_many(empty, cap))
    allowed = cap - empty
    if levels.truncate and items > allowed:
        _cut_json(document, levels, allowed)
    return Decoded(otlp.decode_document(document, message_type), empty, items)


def decoded_memory_estimate(body: bytes, encoding: otlp.Encoding) -> int:
    """Bytes decoding may hold beyond an ordinary body's share, charged to the in-flight budget first.

    JSON: every ``{`` or ``[`` may become a Python object (an upper bound: brackets inside strings count
    too), so ``{"resourceLogs":[{},{},…]}`` is charged for its 333,000 objects per megabyte, an honest body
    for nothing extra. Protobuf: a large body's entries are counted and bounded by ``protobuf_shape``
    before upb parses it (one large body at a time, on the decode worker), so nothing is added here.
    """
    if encoding is not otlp.Encoding.JSON:
        return 0
    containers = body.count(b"{") + body.count(b"[")
    return max(0, containers * JSON_CONTAINER_BYTES - JSON_FREE_RATIO * len(body))


def _too_many(empty: int, cap: int) -> str:
    shown = f"more than {cap}" if empty > cap else str(empty)
    return (f"{shown} resource or scope entries hold nothing; empty entries count against the limit of "
            f"{cap} records per request")


async def decode_off_loop(
    body: bytes, encoding: otlp.Encoding, message_type: type[Any], levels: Levels, cap: int
) -> Decoded:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        _LARGE_DECODES, decode_within_budget, body, encoding, message_type, levels, cap
    )
