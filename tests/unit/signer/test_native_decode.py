"""The compiled reading of the usual canonical message (services/signer/_native_rows.c) gives exactly the row the
Python path gives, and leaves every other message to the Python path (which refuses it with its own reason).

Messages are generated as the redactor writes them and then changed: headers (as test_decode_paths does), and
values (fields of odd types, missing or extra, unicode, big integers, floats, escaped NULs, timestamps with
offsets or none, costs that round or overflow, deep nesting, an event id or a plane the header or the key does
not allow). Where the compiled module must be built: test_native_built.
"""

from __future__ import annotations

import json
import logging
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.signer import rows, worker
from services.signer.rows import ChainRow
from shared.canonical import EVENT_COLUMNS, CanonicalEvent
from shared.canonicalize.transform import BatchRejected, TransformStats, transform_batch
from shared.messages import canonical_event
from tests.bench.bench_signer import make_events
from tests.unit.redactor import test_transform_pinned as pinned
from tests.unit.signer.test_decode_paths import (
    EXAMPLES,
    KEYRING,
    REDACTOR,
    Message,
    _reference_row,
    canonical_messages,
    outcome,
)
from tests.unit.signer.test_rows import message

BUILT = rows.decode_usual_row is not None
# Whether it must be built here: test_native_built.
compiled = pytest.mark.skipif(not BUILT, reason="the compiled decoding is not built here or not meant")


def exactly(value: Any) -> Any:
    """``value`` with the type of everything in it, in order: True is not 1, nor Decimal('1.0') Decimal('1.00'),
    nor one dict another with its keys in another order."""
    if type(value) is dict:
        return ("dict", [(exactly(key), exactly(item)) for key, item in value.items()])
    if type(value) is list:
        return ("list", [exactly(item) for item in value])
    if type(value) is datetime:
        return ("datetime", value.isoformat(), repr(value.tzinfo))
    return (type(value).__name__, repr(value))


def row_exactly(row: ChainRow) -> Any:
    return (type(row), row.event_id, row.tenant_id, exactly(row.values), row.raw, row.plain)


_TIMES = ["2026-11-28T12:00:00+00:00", "2026-11-28T12:00:00.123456+00:00", "2026-11-28T14:00:00.5+02:00",
          "2026-11-28T12:00:00", "2026-11-28T12:00:00Z", "2026-11-28 12:00:00+00:00", "yesterday", "",
          "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-11-28T12:00:00+00:00:30"]
_COSTS = ["0.006850", "0.0000005", "-0.0000001", "0", "-0", "1e20", "99999999999999.9999995", "99999999999999.999999",
          "NaN", "sNaN", "Infinity", "-Infinity", "cheap", "", " 1.5 ", "1_0", "1e-999999999", "1e999999999", "٣"]
_TEXTS = st.one_of(st.text(max_size=12), st.sampled_from(["a\u0000b", "\ud800", "é", "\U0001f600", "\\u0000", "x"]))
_NUMBERS = st.one_of(st.integers(), st.sampled_from([2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1, 2**63, 2**64, 2**70,
                                                     -(2**63), -(2**63) - 1]))
_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), _NUMBERS, st.floats(allow_nan=True), _TEXTS),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_TEXTS, inner, max_size=3)),
    max_leaves=8,
)
_NAMES = st.sampled_from(["claude_code", "access", "erasure", "user_prompt", "api_request", "access_record"])


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"n": value} if depth % 2 else [value]
    return value


_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "event_time": st.sampled_from(_TIMES),
    "received_at": st.sampled_from(_TIMES),
    "cost": st.one_of(st.none(), st.sampled_from(_COSTS)),
    "plane": _NAMES,
    "event_type": _NAMES,
    "attributes": st.one_of(st.dictionaries(_TEXTS, _JSON, max_size=4),
                            st.sampled_from([{"deep": _deep(70)}, {"deep": _deep(63)}, {"big": 2**70}])),
    "content": st.dictionaries(_TEXTS, _TEXTS, max_size=3),
}
_ANY_VALUE = st.one_of(_JSON, st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=2))
_OF_KIND: dict[type, st.SearchStrategy[Any]] = {
    str: _TEXTS, int: _NUMBERS, bool: st.booleans(), type(None): st.none(), dict: st.dictionaries(_TEXTS, _JSON,
                                                                                                  max_size=3)}
_HINTS = typing.get_type_hints(CanonicalEvent)


def _of_its_type(name: str) -> st.SearchStrategy[Any]:
    """A value of the field's own type (with the values that matter most for some), so most events are valid."""
    if name in _FIELD_VALUES:
        return _FIELD_VALUES[name]
    if name not in _HINTS:
        return _ANY_VALUE
    return st.one_of(*(_OF_KIND[kind] for kind in rows._allowed_types(_HINTS[name])))


@st.composite
def _changes(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from([*EVENT_COLUMNS, "surprise", "ключ"]), max_size=4))
    return {name: draw(st.one_of(_of_its_type(name), _of_its_type(name), _of_its_type(name), _ANY_VALUE))
            for name in names}


def _value(draw: st.DrawFn, event_id: str) -> bytes:
    """A canonical event for ``event_id`` (or, now and then, another), as written or changed."""
    data = message(event_id=draw(st.sampled_from([event_id] * 5 + ["other"])))
    data.update(draw(_changes()))
    for name in draw(st.lists(st.sampled_from(EVENT_COLUMNS), max_size=draw(st.sampled_from([0, 3])))):
        data.pop(name, None)
    if draw(st.booleans()):
        data = {name: data[name] for name in draw(st.permutations(list(data)))}
    written = draw(st.sampled_from(["json", "json", "ascii json", "ascii json", "orjson", "orjson", "other document"]))
    try:
        if written == "orjson":
            return orjson.dumps(data)
        if written == "other document":
            return draw(st.sampled_from([b"[1]", b"{", b"null", b'"x"', json.dumps(data).encode("utf-16")]))
        return json.dumps(data, ensure_ascii=written == "ascii json").encode("utf-8", "surrogatepass")
    except (TypeError, ValueError):  # orjson refuses a lone surrogate or an integer beyond 64 bits
        return json.dumps(data).encode()


def _general(msg: Message) -> tuple[str, Any]:
    """What the Python path gives: the row (with its types) or the class and text of the refusal."""
    kind, result = outcome(lambda: _reference_row(msg, KEYRING))
    return (kind, row_exactly(result)) if kind == "value" else (kind, result)


@compiled
@EXAMPLES
@given(canonical_messages(_value))
def test_the_compiled_decoding_gives_the_python_paths_row_or_leaves_the_message_to_it(msg: Message) -> None:
    general = _general(msg)
    states = KEYRING.states_by_header(canonical_event.DOMAIN)
    assert rows.decode_usual_row is not None
    compiled_row = rows.decode_usual_row(msg.value, msg.headers, states)
    if compiled_row is not None:  # only ever a row, and only the one the Python path gives
        assert general == ("value", row_exactly(compiled_row))
    # And the worker's reading, the compiled path first, gives what the Python path gives, row or refusal.
    kind, result = outcome(lambda: worker.decode_authenticated_row(msg, KEYRING))
    assert (kind, row_exactly(result) if kind == "value" else result) == general


@compiled
def test_the_benchs_messages_all_take_the_compiled_path() -> None:
    assert rows.decode_usual_row is not None
    states = KEYRING.states_by_header(canonical_event.DOMAIN)
    for request_id in (None, "req-1"):
        for payload in make_events(40, 3):
            event_id = json.loads(payload)["event_id"]
            msg = Message(payload, canonical_event.encode_value(event_id, payload, REDACTOR, request_id))
            compiled_row = rows.decode_usual_row(msg.value, msg.headers, states)
            assert compiled_row is not None
            assert _general(msg) == ("value", row_exactly(compiled_row))
            assert compiled_row.plain


@compiled
def test_the_redactors_messages_give_the_python_paths_rows_and_the_real_captures_all_take_the_compiled_path(
        fixtures_dir: Path) -> None:
    """The real Claude Code captures and the synthetic batches that reach every branch of the mapping, as the
    redactor's transform writes them (the synthetic ones hold floats and NULs, which the Python path reads)."""
    logging.getLogger("redactor").setLevel(logging.ERROR)  # one "content withheld" warning per refused field
    assert rows.decode_usual_row is not None
    states = KEYRING.states_by_header(canonical_event.DOMAIN)
    taken = {True: 0, False: 0}
    for number, batch in enumerate(pinned.raw_batches(fixtures_dir)):
        try:
            events = list(transform_batch(batch, pinned.Lookup(pinned.StandIn()), pinned.POLICIES[0],
                                          TransformStats()))
        except BatchRejected:
            continue
        for event in events:
            _, value, headers = canonical_event.encode(event, REDACTOR, batch.request_id)
            msg = Message(value, headers)
            compiled_row = rows.decode_usual_row(value, headers, states)
            general = _general(msg)
            assert general[0] == "value"
            if compiled_row is not None:
                assert general == ("value", row_exactly(compiled_row))
            else:
                assert number >= len(pinned.CAPTURES), "a real capture's event left the compiled path"
            taken[compiled_row is not None] += 1
    assert taken[True] > 100 and taken[False] > 100


@compiled
def test_the_usual_kinds_of_event_take_the_compiled_path() -> None:
    assert rows.decode_usual_row is not None
    states = KEYRING.states_by_header(canonical_event.DOMAIN)
    only_required = {name: value for name, value in message().items() if name in {
        "event_id", "tenant_id", "org_id", "license_id", "plane", "event_type", "event_time", "received_at"}}
    for data in (message(), message(cost=None, session_id=None), message(cost="0.0000005"),
                 message(attributes={"n": [1, {"b": True}], "k": "ü"}), only_required):
        value = json.dumps(data).encode()
        msg = Message(value, canonical_event.encode_value("e1", value, REDACTOR))
        compiled_row = rows.decode_usual_row(msg.value, msg.headers, states)
        assert compiled_row is not None
        assert _general(msg) == ("value", row_exactly(compiled_row))


@compiled
def test_what_the_compiled_path_is_handed_wrongly_is_refused_not_crashed_on() -> None:
    from services.signer import _native_rows  # noqa: PLC0415 - built (the test above says so)

    value = json.dumps(message()).encode()
    headers = canonical_event.encode_value("e1", value, REDACTOR)
    with pytest.raises(TypeError):
        _native_rows.decode(value, headers, [])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _native_rows.decode(value, headers, {REDACTOR.key_id.encode(): ("not", "states")})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        _native_rows.decode(value, headers)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _native_rows.configure()  # type: ignore[call-arg]
