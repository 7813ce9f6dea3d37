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

# One thread: large decodes run one at a time, so they can never take every core (or every GIL slice).
_LARGE_DECODES = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="otlp-decode")


@dataclass(frozen=True)
class Levels:
    """A signal's three levels, by their JSON names: group (resource) -> scope -> item."""

    groups: str
    scopes: str
    items: str
    truncate: bool  # items may be cut to the per-request cap (log records; not metrics)


LOG_LEVELS = Levels("resourceLogs", "scopeLogs", "logRecords", truncate=True)
METRIC_LEVELS = Levels("resourceMetrics", "scopeMetrics", "metrics", truncate=False)
_PROTO_NAMES = {
    "resourceLogs": "resource_logs", "scopeLogs": "scope_logs", "logRecords": "log_records",
    "resourceMetrics": "resource_metrics", "scopeMetrics": "scope_metrics", "metrics": "metrics",
}
_ALIASES = {name: (name, proto) for name, proto in _PROTO_NAMES.items()}


class TooManyEmptyEntries(otlp.PayloadError):
    """More resource/scope entries without content than the request may hold records."""


@dataclass(frozen=True)
class Decoded:
    request: Any
    empty_entries: int  # resource entries without scopes + scope entries without items
    items_before_cut: int  # items the body held (JSON logs are cut to the cap before conversion)


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


def _protobuf_empty_entries(request: Any, levels: Levels, cap: int) -> int:
    empty = 0
    scopes_field, items_field = _PROTO_NAMES[levels.scopes], _PROTO_NAMES[levels.items]
    for group in getattr(request, _PROTO_NAMES[levels.groups]):
        scopes = getattr(group, scopes_field)
        if not scopes:
            empty += 1
        for scope in scopes:
            if not getattr(scope, items_field):
                empty += 1
        if empty > cap:
            break
    return empty


def decode_within_budget(
    body: bytes, encoding: otlp.Encoding, message_type: type[Any], levels: Levels, cap: int
) -> Decoded:
    """Decode, refusing (TooManyEmptyEntries) a body with more than ``cap`` empty entries before converting it."""
    if encoding is otlp.Encoding.PROTOBUF:
        request = otlp.decode_request(body, encoding, message_type)
        empty = _protobuf_empty_entries(request, levels, cap)
        if empty > cap:
            raise TooManyEmptyEntries(_too_many(empty, cap))
        return Decoded(request, empty, -1)
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise otlp.PayloadError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise otlp.PayloadError("JSON body must be an object")
    empty, items = _json_shape(document, levels, cap)
    if empty > cap:
        raise TooManyEmptyEntries(_too_many(empty, cap))
    allowed = cap - empty
    if levels.truncate and items > allowed:
        _cut_json(document, levels, allowed)
    return Decoded(otlp.decode_document(document, message_type), empty, items)


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
