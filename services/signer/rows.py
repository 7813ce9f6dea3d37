"""A canonical-topic message turned into the column values of one ``audit_logs`` row, checked against the schema.

This is the signer's hot path, so it works on the decoded JSON directly instead of building a
``CanonicalEvent`` and converting it back: every field is checked against the event model's type, values are
put in the form PostgreSQL will hand back (``shared.chain.as_stored``), and anything else is refused with
a ``ValueError``, which the worker treats as permanent and dead-letters.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import os
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, fields
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import orjson

from shared import exactjson
from shared.canonical import (
    BIGINT_RANGE,
    COST_LIMIT,
    EVENT_COLUMNS,
    INTEGER_COLUMNS,
    INTEGER_RANGE,
    CanonicalEvent,
)
from shared.chain import as_stored, json_is_plain, stored_cost
from shared.messages.auth import KEY_ID_HEADER, MAC_HEADER, KeyStates
from shared.messages.canonical_event import EVENT_ID, REQUEST_ID

JSON_COLUMNS = frozenset({"content", "content_lengths", "redacted_fields", "attributes"})
_FIELD_NAMES = frozenset(EVENT_COLUMNS)
_NUL_ESCAPE = b"\\u0000"
_SURROGATE_ESCAPE, _SURROGATE_ESCAPE_UPPER = b"\\ud", b"\\uD"  # how a surrogate (paired or not) can arrive


class ChainRow(NamedTuple):
    """Column values of one event, as stored (the chain columns are added when it is chained).

    ``plain``: every value is of its column's type, timestamps are in UTC, the cost is rounded as stored, and
    the JSON columns hold no floats and only ASCII keys, so ``canonical_bytes_checked`` may hash it.
    """

    event_id: str
    tenant_id: str
    values: dict[str, Any]
    raw: bytes  # the message as it arrived, for the dead-letter topic
    plain: bool = False

    @classmethod
    def of(cls, event: CanonicalEvent) -> ChainRow:
        values = as_stored({column: getattr(event, column) for column in EVENT_COLUMNS}, JSON_COLUMNS)
        return cls(event.event_id, event.tenant_id, values, event.to_json())


def _allowed_types(annotation: Any) -> frozenset[type]:
    """The exact Python types a field may hold once decoded from JSON (``bool`` is not an ``int`` here)."""
    if isinstance(annotation, types.UnionType):
        return frozenset().union(*(_allowed_types(arg) for arg in typing.get_args(annotation)))
    origin = typing.get_origin(annotation)
    if origin is not None:
        return frozenset({origin})
    if annotation is type(None):
        return frozenset({type(None)})
    if annotation in (datetime, Decimal):  # arrive as strings; parsed separately
        return frozenset({str})
    return frozenset({annotation})


_TypeGroup = tuple[Callable[[dict[str, Any]], tuple[Any, ...]], frozenset[type], tuple[str, ...]]


def _type_groups() -> list[_TypeGroup]:
    by_types: dict[frozenset[type], list[str]] = {}
    for name, annotation in typing.get_type_hints(CanonicalEvent).items():
        by_types.setdefault(_allowed_types(annotation), []).append(name)
    groups: list[_TypeGroup] = []
    for allowed, names in by_types.items():
        # itemgetter of a single name returns the value, not a 1-tuple; a repeated name keeps it a tuple.
        getter = operator.itemgetter(*names) if len(names) > 1 else operator.itemgetter(names[0], names[0])
        groups.append((getter, allowed, tuple(names)))
    return groups


_TYPE_GROUPS = _type_groups()
# A number its column cannot hold would fail the whole batch's COPY; refused here, it is dead-lettered alone.
_INTEGER_BOUNDS = tuple(
    (name, INTEGER_RANGE if name in INTEGER_COLUMNS else BIGINT_RANGE)
    for name, annotation in typing.get_type_hints(CanonicalEvent).items()
    if int in _allowed_types(annotation)
)
_json_values = operator.itemgetter("content", "content_lengths", "redacted_fields", "attributes")
_new_row = tuple.__new__  # a ChainRow from its five values, without the generated __new__'s keyword handling
_DEFAULTS: dict[str, Any] = {}
_REQUIRED: set[str] = set()
for _field in fields(CanonicalEvent):
    if _field.default is not MISSING:
        _DEFAULTS[_field.name] = _field.default
    elif _field.default_factory is not MISSING:
        _DEFAULTS[_field.name] = _field.default_factory()
    else:
        _REQUIRED.add(_field.name)
_REQUIRED_FIELDS = frozenset(_REQUIRED)


_from_iso = datetime.fromisoformat


def _timestamp(name: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{name} is not an ISO 8601 timestamp: {text[:40]!r}") from exc
    if value.tzinfo is None:
        raise ValueError(f"{name} has no UTC offset: {text[:40]!r}")
    if value.tzinfo is UTC:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00, which is in year 0 in UTC
        raise ValueError(f"{name} is out of range in UTC: {text[:40]!r}") from exc


@functools.lru_cache(maxsize=64)
def _received_at(text: str) -> datetime:
    """``received_at``, which the events of one request share: most rows find it parsed already."""
    return _timestamp("received_at", text)


def _refuse_lone_surrogates(data: dict[str, Any]) -> None:
    """orjson refuses a string escape of half a surrogate pair; the standard library reads it, but it is not
    UTF-8, so the row could be neither hashed nor stored (and ``CanonicalEvent.to_json`` refuses it too)."""
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise ValueError("canonical event holds a lone surrogate, which is not UTF-8") from exc


# How deep a JSON column may nest objects and arrays (the column's own object is level 1). The redactor writes
# far less (OTLP's decoder stops at 100 message levels, three per level of a nested attribute); deeper, a
# row could be accepted here and then fail its hashing (orjson writes at most 255 levels), which would take
# its whole batch down with it. The compiled decoding leaves anything deeper to this path.
MAX_JSON_NESTING = 64


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` (decoded JSON) has an object or array more than ``limit`` levels down; no recursion,
    so a value nested to the decoder's own limit is measured too."""
    level: list[tuple[Any, int]] = [(value, 1)]
    while level:
        item, depth = level.pop()
        children = item.values() if type(item) is dict else item
        if depth > limit:
            return True
        level.extend((child, depth + 1) for child in children if type(child) is dict or type(child) is list)
    return False


class _DecodedInexactly(Exception):
    """orjson read a number as a float; the standard library decides whether it was an integer."""


def decode_row(raw: bytes) -> ChainRow:
    """One canonical-topic message as a row; ``ValueError`` says what is wrong with a message that is not."""
    try:
        try:
            return _decode(raw, orjson.loads(raw), exact=False)
        except (orjson.JSONDecodeError, _DecodedInexactly):
            # Integers beyond 64 bits (orjson reads them as floats), NaN, lone surrogates: the exact decoder.
            return _decode(raw, json.loads(raw), exact=True)
    except RecursionError as exc:  # JSON nested too deeply for the decoder or for the checks here
        raise ValueError("canonical event is nested too deeply") from exc


# Shapes (field names in order, then the type of each value) of objects whose fields and types were found
# valid: whether an object is valid in these respects depends on its shape alone, and a producer sends a few
# shapes over and over. Each maps to what follows from the shape: the fields the object left out, which take
# their defaults, and the integer fields that hold a number (not null), which alone need their range checked.
class _Shape(NamedTuple):
    missing: tuple[str, ...]
    integers: tuple[tuple[str, range], ...]


_VALID_SHAPES: dict[tuple[Any, ...], _Shape] = {}
_MAX_SHAPES = 1_024


def _check_shape(data: dict[str, Any], *, exact: bool) -> _Shape:
    """What follows from the shape of ``data``, once its fields and their types are found valid."""
    keys = data.keys()
    if not keys <= _FIELD_NAMES:
        raise ValueError(f"canonical event has unknown fields: {sorted(keys - _FIELD_NAMES)}")
    if not keys >= _REQUIRED_FIELDS:
        raise ValueError(f"canonical event lacks fields: {sorted(_REQUIRED_FIELDS - keys)}")
    values = {**_DEFAULTS, **data}
    for getter, allowed, names in _TYPE_GROUPS:
        if not allowed.issuperset(map(type, getter(values))):
            if not exact:
                raise _DecodedInexactly
            wrong = [n for n in names if type(values[n]) not in allowed]
            raise ValueError(f"canonical event field {wrong[0]} has type {type(values[wrong[0]]).__name__}")
    return _Shape(
        tuple(name for name in _DEFAULTS if name not in keys),
        tuple((name, bounds) for name, bounds in _INTEGER_BOUNDS if type(values[name]) is int),
    )


def _decode(raw: bytes, data: Any, *, exact: bool) -> ChainRow:
    if type(data) is not dict:
        raise ValueError("canonical event is not a JSON object")
    shape = (*data, *map(type, data.values()))
    known = _VALID_SHAPES.get(shape)
    if known is None:
        known = _check_shape(data, exact=exact)
        if len(_VALID_SHAPES) >= _MAX_SHAPES:
            _VALID_SHAPES.clear()
        _VALID_SHAPES[shape] = known
    missing, integers = known
    values = data  # a fresh object from the decoder: the row's values from here on
    for name in missing:
        default = _DEFAULTS[name]
        values[name] = {} if type(default) is dict else default
    # An empty object (most of them) is plain without a call.
    content, lengths, redacted, attributes = _json_values(values)
    if ((content and _nested_deeper_than(content, MAX_JSON_NESTING))
            or (lengths and _nested_deeper_than(lengths, MAX_JSON_NESTING))
            or (redacted and _nested_deeper_than(redacted, MAX_JSON_NESTING))
            or (attributes and _nested_deeper_than(attributes, MAX_JSON_NESTING))):
        raise ValueError(f"canonical event nests JSON deeper than {MAX_JSON_NESTING} levels")
    plain = (
        (not content or json_is_plain(content))
        and (not lengths or json_is_plain(lengths))
        and (not redacted or json_is_plain(redacted))
        and (not attributes or json_is_plain(attributes))
    )
    if not plain and not exact and any(exactjson.contains_float(values[name]) for name in JSON_COLUMNS):
        raise _DecodedInexactly
    # UTF-16 or UTF-32 (a NUL byte among the first four, as json.loads detects them): only the standard
    # library reads those, and the tests of the raw bytes below only work on UTF-8.
    other_encoding = exact and b"\x00" in raw[:4]
    if exact and (other_encoding or _SURROGATE_ESCAPE in raw or _SURROGATE_ESCAPE_UPPER in raw):
        _refuse_lone_surrogates(data)
    for name, bounds in integers:  # the integer fields that are not null in this shape
        if values[name] not in bounds:
            raise ValueError(f"{name} is out of range for its column: {str(values[name])[:40]}")
    event_time = values["event_time"]
    try:
        parsed = _from_iso(event_time)
    except ValueError:
        parsed = None
    # Most arrive in UTC already; anything else (an offset, no offset, not a timestamp) is decided by _timestamp.
    if parsed is None or parsed.tzinfo is not UTC:
        parsed = _timestamp("event_time", event_time)
    values["event_time"] = parsed
    values["received_at"] = _received_at(values["received_at"])
    cost = values["cost"]
    if cost is not None:
        try:
            values["cost"] = Decimal(cost)
        except InvalidOperation as exc:
            raise ValueError(f"cost is not a decimal number: {cost[:40]!r}") from exc
        if not values["cost"].is_finite():
            raise ValueError(f"cost is not a finite number: {cost[:40]!r}")
    try:
        # A NUL can only arrive escaped: no backslash (one byte, a much faster search) means none.
        if other_encoding or not plain or (b"\\" in raw and _NUL_ESCAPE in raw):
            as_stored(values, JSON_COLUMNS)
        elif cost is not None:
            values["cost"] = stored_cost(values["cost"])  # rounded as numeric(20, 6) will
    except InvalidOperation as exc:  # rounding the cost to six places needs more digits than a Decimal holds
        raise ValueError(f"cost is out of range: {cost[:40]!r}") from exc
    if cost is not None and abs(values["cost"]) >= COST_LIMIT:
        raise ValueError(f"cost is out of range for numeric(20, 6): {cost[:40]!r}")
    return _new_row(ChainRow, (values["event_id"], values["tenant_id"], values, raw, plain))


def _usual_cost(text: str) -> Decimal | None:
    """The cost as ``_decode`` stores it, or None where ``_decode`` refuses it (or would have to decide more)."""
    try:
        cost = Decimal(text)
        if not cost.is_finite():
            return None
        cost = stored_cost(cost)
    except InvalidOperation:
        return None
    return cost if abs(cost) < COST_LIMIT else None


# The JSON types a field may hold, as the compiled path spells them.
_KINDS: dict[type, int] = {str: 1, int: 2, bool: 4, type(None): 8, dict: 16, list: 32}
# Set (to 1) where the pure-Python path is meant to run even though the compiled one is built: its tests, or a
# suspicion about the compiled code.
PURE_PYTHON_SWITCH = "AUDIT_PURE_PYTHON"
# Read once, at start-up: every compiled path of the signer (here and in appender.py) obeys it.
PURE_PYTHON_MEANT = os.environ.get(PURE_PYTHON_SWITCH, "") not in ("", "0")

UsualRowDecoder = Callable[[object, object, dict[bytes, KeyStates]], ChainRow | None]


def _compiled_decoder() -> UsualRowDecoder | None:
    """``_native_rows.decode``, configured with this module's schema and callables; None where it is not built
    (no C compiler where the package was installed) or the switch says the Python path is meant."""
    if PURE_PYTHON_MEANT:
        return None
    try:
        from services.signer import _native_rows  # noqa: PLC0415 - optional: built where a C compiler was
    except ImportError:
        return None
    bounds = dict(_INTEGER_BOUNDS)
    hints = typing.get_type_hints(CanonicalEvent)
    specs = []
    for name in EVENT_COLUMNS:
        bound = bounds.get(name)
        specs.append((name, sum(_KINDS[kind] for kind in _allowed_types(hints[name])), name in _DEFAULTS,
                      _DEFAULTS.get(name), None if bound is None else bound.start,
                      None if bound is None else bound.stop - 1))
    try:
        _native_rows.configure(
            fields=tuple(specs), json_columns=tuple(sorted(JSON_COLUMNS)), loads=orjson.loads, from_iso=_from_iso,
            utc=UTC, received_at=_received_at, cost=_usual_cost, row_type=ChainRow,
            headers=(EVENT_ID, REQUEST_ID, KEY_ID_HEADER, MAC_HEADER), sha256=hashlib.sha256,
        )
    except TypeError:
        # Built from older sources than this module (its configure takes other arguments): as good as not
        # built until the next install compiles it again; test_native_built says so where it must be built.
        return None
    return _native_rows.decode


# What ``decode_authenticated_row`` (the signer's worker) gives the usual message (headers as ``encode_value``
# writes them, MAC and scope holding, a plain row with its event time in UTC and no escaped NUL), in compiled
# code; None for any other message, which the Python path then decodes or refuses from the start. Called with
# the value, the headers and ``Keyring.states_by_header(canonical_event.DOMAIN)``. None where not built.
decode_usual_row: UsualRowDecoder | None = _compiled_decoder()
