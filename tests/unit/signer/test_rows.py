"""decode_row: the signer's reading of a canonical message gives the same stored values as the event model,
and refuses what the model's types do not allow."""

from __future__ import annotations

import json
import math
import random
import typing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from services.signer.rows import MAX_JSON_NESTING, ChainRow, decode_row
from shared.canonical import BIGINT_RANGE, EVENT_COLUMNS, INTEGER_COLUMNS, INTEGER_RANGE, CanonicalEvent

T0 = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)


def message(**changes: Any) -> dict[str, Any]:
    event = CanonicalEvent(
        event_id="e1",
        tenant_id="t1",
        org_id="acme",
        license_id="lic",
        plane="claude_code",
        event_type="api_request",
        event_time=T0,
        received_at=T0 + timedelta(milliseconds=3),
        session_id="s1",
        model="claude-opus-5-5",
        input_tokens=1200,
        tokens_used=1637,
        cost=Decimal("0.006850"),
        content={"prompt": "hi <EMAIL>"},
        content_lengths={"prompt": 10},
        redacted_fields={"prompt": {"EMAIL": 1}},
        content_captured=True,
        attributes={"terminal.type": "xterm"},
    )
    data: dict[str, Any] = json.loads(event.to_json())
    data.update(changes)
    return data


def reference(raw: bytes) -> ChainRow:
    return ChainRow.of(CanonicalEvent.from_json(raw))


VALID: dict[str, tuple[dict[str, Any], bool]] = {
    # name: (changes to the message, whether the row takes the checked hashing path)
    "typical": ({}, True),
    "only required fields": (
        {k: v for k, v in message().items() if k in {"event_id", "tenant_id", "org_id", "license_id", "plane",
                                                       "event_type", "event_time", "received_at"}},
        True,
    ),
    "whole-second timestamp": ({"event_time": "2026-11-28T12:00:00+00:00"}, True),
    "offset timestamp becomes UTC": ({"event_time": "2026-11-28T14:00:00.5+02:00"}, True),
    "cost rounded as numeric(20, 6)": ({"cost": "0.0000005"}, True),
    "negative zero cost": ({"cost": "-0.0000001"}, True),
    "float attribute": ({"attributes": {"ratio": 0.25}}, False),
    "float written as 1e16": ({"attributes": {"x": 1e16}}, False),
    "integer beyond 64 bits": ({"attributes": {"big": 2**70}}, True),
    "integer beyond 2^53": ({"attributes": {"big": 2**60}}, True),
    "nested float": ({"attributes": {"x": [1, {"y": 2.5}]}}, False),
    "non-ASCII key": ({"attributes": {"ключ": "v"}}, False),
    "NUL in content": ({"content": {"prompt": "a\u0000b"}}, True),
    "NUL in a key": ({"attributes": {"a\u0000": "b"}}, True),
    "NUL in a text column": ({"user_email": "x\u0000@y"}, True),
    "null optional columns": ({"session_id": None, "cost": None, "success": None}, True),
    "booleans": ({"success": True, "claimed_org_mismatch": True}, True),
}


@pytest.mark.parametrize(("changes", "plain"), list(VALID.values()), ids=list(VALID))
def test_values_match_the_event_model(changes: dict[str, Any], plain: bool) -> None:
    data = message() | changes if "event_id" in changes else message(**changes)
    raw = json.dumps(data).encode()
    row = decode_row(raw)
    assert row.values == reference(raw).values
    assert (row.event_id, row.tenant_id, row.raw, row.plain) == ("e1", "t1", raw, plain)
    for column in ("event_time", "received_at"):
        assert row.values[column].tzinfo is UTC


def test_timestamps_are_converted_to_utc() -> None:
    row = decode_row(json.dumps(message(event_time="2026-11-28T14:00:00.5+02:00")).encode())
    assert row.values["event_time"] == datetime(2026, 11, 28, 12, 0, 0, 500000, tzinfo=UTC)


INVALID: dict[str, tuple[bytes, str]] = {
    "not JSON": (b"{", "Expecting"),
    "not an object": (b"[1, 2]", "not a JSON object"),
    "unknown field": (json.dumps(message(surprise=1)).encode(), "unknown fields"),
    "missing required field": (
        json.dumps({k: v for k, v in message().items() if k != "org_id"}).encode(),
        "lacks fields",
    ),
    "bool in an integer column": (json.dumps(message(input_tokens=True)).encode(), "input_tokens"),
    "float in an integer column": (json.dumps(message(input_tokens=1.5)).encode(), "input_tokens"),
    "string in a boolean column": (json.dumps(message(success="yes")).encode(), "success"),
    "null in a required column": (json.dumps(message(tenant_id=None)).encode(), "tenant_id"),
    "list as content": (json.dumps(message(content=["a"])).encode(), "content"),
    "naive timestamp": (json.dumps(message(event_time="2026-11-28T12:00:00")).encode(), "no UTC offset"),
    "not a timestamp": (json.dumps(message(received_at="yesterday")).encode(), "not an ISO 8601"),
    "cost not a number": (json.dumps(message(cost="cheap")).encode(), "not a decimal"),
    "cost infinite": (json.dumps(message(cost="Infinity")).encode(), "not a finite"),
    "cost as a JSON number": (json.dumps(message(cost=0.5)).encode(), "cost"),
}


@pytest.mark.parametrize(("raw", "error"), list(INVALID.values()), ids=list(INVALID))
def test_bad_messages_are_refused_with_a_reason(raw: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        decode_row(raw)


# --- Every field against its annotation in CanonicalEvent ------------------------------------------------------

REQUIRED = ("event_id", "tenant_id", "org_id", "license_id", "plane", "event_type", "event_time", "received_at")
INT_FIELDS = tuple(
    name for name, hint in typing.get_type_hints(CanonicalEvent).items() if hint == int | None
)
BOOL_FIELDS = ("claimed_org_mismatch", "content_captured")
OPTIONAL_BOOL_FIELDS = ("success",)
OPTIONAL_STR_FIELDS = tuple(
    name for name, hint in typing.get_type_hints(CanonicalEvent).items() if hint == str | None
)
REQUIRED_STR_FIELDS = ("event_id", "tenant_id", "org_id", "plane", "event_type")
DICT_FIELDS = ("content", "content_lengths", "redacted_fields", "attributes")

# A value of the wrong JSON type for each kind of field: bool is not an int, a float (even 1.0) is not an int,
# 0 and 1 are not booleans, nothing but an object is a dict.
WRONG_VALUES: dict[tuple[str, ...], tuple[Any, ...]] = {
    INT_FIELDS: (True, False, 1.5, 1.0, 1e3, "1", [1], {"n": 1}),
    BOOL_FIELDS: (0, 1, "true", None, 1.0, []),
    OPTIONAL_BOOL_FIELDS: (0, 1, "false", {}),
    OPTIONAL_STR_FIELDS: (1, True, 1.5, ["a"], {"a": "b"}),
    REQUIRED_STR_FIELDS: (None, 1, False, ["e1"]),
    DICT_FIELDS: ([], "x", 1, True, None),
    ("event_time", "received_at"): (None, 1_700_000_000, 1.5, ["2026-11-28T12:00:00Z"]),
    ("cost",): (1, 0.5, True, ["1"], {"v": "1"}),
    ("license_id",): (1, True, ["lic"]),
}
WRONG_TYPES = [(field, value) for fields, values in WRONG_VALUES.items() for field in fields for value in values]


def test_the_tables_cover_every_field() -> None:
    covered = {field for fields in WRONG_VALUES for field in fields}
    assert covered == set(EVENT_COLUMNS)
    assert INT_FIELDS and OPTIONAL_STR_FIELDS  # the annotations still read as the tables expect


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES, ids=[f"{f}={v!r}" for f, v in WRONG_TYPES])
def test_a_value_of_the_wrong_type_is_refused(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        decode_row(json.dumps(message(**{field: value})).encode())


BIGINT_FIELDS = tuple(name for name in INT_FIELDS if name not in INTEGER_COLUMNS)
RIGHT_VALUES: dict[tuple[str, ...], tuple[Any, ...]] = {
    BIGINT_FIELDS: (0, -1, 2**53, 2**63 - 1, -(2**63), None),
    tuple(sorted(INTEGER_COLUMNS)): (0, -1, 2**31 - 1, -(2**31), None),
    BOOL_FIELDS: (True, False),
    OPTIONAL_BOOL_FIELDS: (True, False, None),
    OPTIONAL_STR_FIELDS: ("", "é😀", None),
    ("batch_id",): ("b1", None),
}
RIGHT_TYPES = [(field, value) for fields, values in RIGHT_VALUES.items() for field in fields for value in values]


@pytest.mark.parametrize(("field", "value"), RIGHT_TYPES, ids=[f"{f}={v!r}" for f, v in RIGHT_TYPES])
def test_a_value_of_the_right_type_is_kept_as_the_event_model_keeps_it(field: str, value: Any) -> None:
    raw = json.dumps(message(**{field: value})).encode()
    row = decode_row(raw)
    assert row.values == reference(raw).values
    assert row.values[field] == value and type(row.values[field]) is type(value)


OUT_OF_RANGE: dict[tuple[str, ...], tuple[int, ...]] = {
    # 2**63 as orjson reads it (an unsigned 64-bit integer); the others through the exact decoder.
    BIGINT_FIELDS: (2**63, -(2**63) - 1, 2**64, -(2**70)),
    tuple(sorted(INTEGER_COLUMNS)): (2**31, -(2**31) - 1, 2**63),
}
OUT_OF_RANGE_VALUES = [(field, value) for fields, values in OUT_OF_RANGE.items() for field in fields for value in values]


@pytest.mark.parametrize(
    ("field", "value"), OUT_OF_RANGE_VALUES, ids=[f"{f}={v!r}" for f, v in OUT_OF_RANGE_VALUES]
)
def test_an_integer_its_column_cannot_hold_is_refused(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"{field} is out of range for its column"):
        decode_row(json.dumps(message(**{field: value})).encode())


@pytest.mark.parametrize("field", REQUIRED)
def test_each_required_field_is_required(field: str) -> None:
    data = message()
    del data[field]
    with pytest.raises(ValueError, match=f"lacks fields: \\['{field}'\\]"):
        decode_row(json.dumps(data).encode())


@pytest.mark.parametrize("field", ["surprise", "chain_seq", "prev_hash", "row_hash", "signature", "Event_id", ""])
def test_unknown_fields_are_named(field: str) -> None:
    with pytest.raises(ValueError, match="unknown fields"):
        decode_row(json.dumps(message() | {field: None}).encode())


@pytest.mark.parametrize("document", [b"null", b"true", b"1", b"1.5", b'"event"', b"[]", b'[{"event_id": "e1"}]'])
def test_a_document_that_is_not_an_object_is_refused(document: bytes) -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        decode_row(document)


def _nested(depth: int) -> str:
    return "[" * depth + '"x"' + "]" * depth


MORE_INVALID: dict[str, tuple[bytes, str]] = {
    "empty message": (b"", "Expecting value"),
    "trailing garbage": (json.dumps(message()).encode() + b"x", "Extra data"),
    "invalid UTF-8": (json.dumps(message(model="MODEL")).encode().replace(b"MODEL", b"\xff\xfe"), "utf-8"),
    "naive receive time": (json.dumps(message(received_at="2026-11-28T12:00:00.5")).encode(), "received_at"),
    "date without a time": (json.dumps(message(event_time="2026-11-28")).encode(), "no UTC offset"),
    "cost NaN": (json.dumps(message(cost="NaN")).encode(), "not a finite"),
    "cost signalling NaN": (json.dumps(message(cost="sNaN")).encode(), "not a finite"),
    "cost negative infinity": (json.dumps(message(cost="-Infinity")).encode(), "not a finite"),
    "cost empty": (json.dumps(message(cost="")).encode(), "not a decimal"),
    "cost with a unit": (json.dumps(message(cost="0.5 USD")).encode(), "not a decimal"),
    # Rounding to six places needs more digits than a Decimal holds: was decimal.InvalidOperation.
    "cost beyond 28 digits": (json.dumps(message(cost="1e30")).encode(), "cost is out of range"),
    "cost beyond 28 digits, with floats": (
        json.dumps(message(cost="-1e23", attributes={"ratio": 0.5})).encode(),
        "cost is out of range",
    ),
    # Values their columns cannot hold: the whole batch's COPY failed before the event was found and refused.
    "cost of 10^14": (json.dumps(message(cost="1e14")).encode(), "numeric"),
    "cost that rounds to 10^14": (json.dumps(message(cost="-99999999999999.9999995")).encode(), "numeric"),
    "cost of 10^21": (json.dumps(message(cost="1e21")).encode(), "numeric"),
    "tokens beyond bigint, as orjson reads them": (
        json.dumps(message(input_tokens=2**63)).encode(),
        "input_tokens is out of range",
    ),
    "tokens beyond 64 bits": (json.dumps(message(tokens_used=-(2**80))).encode(), "tokens_used is out of range"),
    "status code beyond integer": (json.dumps(message(status_code=2**31)).encode(), "status_code is out of range"),
    "attempt below integer": (json.dumps(message(attempt=-(2**31) - 1)).encode(), "attempt is out of range"),
    # In UTC these fall in year 0 or 10000: was OverflowError.
    "event time before year 1 in UTC": (
        json.dumps(message(event_time="0001-01-01T00:30:00+01:00")).encode(),
        "event_time is out of range",
    ),
    "receive time after year 9999 in UTC": (
        json.dumps(message(received_at="9999-12-31T23:59:59.999999-00:01")).encode(),
        "received_at is out of range",
    ),
    # Deeper than orjson reads, then too deep for the standard library: was RecursionError.
    "nested beyond orjson's limit": (
        json.dumps(message(attributes="@")).encode().replace(b'"@"', _nested(1100).encode()),
        "nested too deeply",
    ),
    "nested far too deeply": (
        json.dumps(message(attributes="@")).encode().replace(b'"@"', _nested(100_000).encode()),
        "nested too deeply",
    ),
}


@pytest.mark.parametrize(("raw", "error"), list(MORE_INVALID.values()), ids=list(MORE_INVALID))
def test_more_bad_messages_are_refused_with_a_value_error(raw: bytes, error: str) -> None:
    # The worker dead-letters ValueError (and TypeError, KeyError); anything else would stop the signer, and the
    # message would stop it again after every restart.
    with pytest.raises(ValueError, match=error):
        decode_row(raw)


def _attributes_nested(levels: int) -> bytes:
    """A message whose attributes nest ``levels`` deep: the attributes object, then arrays."""
    return json.dumps(message(attributes={"a": "@"})).encode().replace(b'"@"', _nested(levels - 1).encode())


@pytest.mark.parametrize("levels", [2, 33, MAX_JSON_NESTING])
def test_json_nested_up_to_the_limit_is_kept(levels: int) -> None:
    assert decode_row(_attributes_nested(levels)).values["attributes"] == orjson.loads(_attributes_nested(levels))[
        "attributes"]


# 256 and 300 are deeper than orjson writes (so the row could not be hashed), 1,000 deeper than the recursive
# plainness check goes: each was accepted here once, and then failed its whole batch.
@pytest.mark.parametrize("levels", [MAX_JSON_NESTING + 1, 256, 300, 1_000])
def test_json_nested_beyond_the_limit_is_refused(levels: int) -> None:
    with pytest.raises(ValueError, match=f"deeper than {MAX_JSON_NESTING} levels"):
        decode_row(_attributes_nested(levels))


EDGE_TIMES = {
    "first microsecond in UTC": "0001-01-01T00:00:00.000001+00:00",
    "last microsecond in UTC": "9999-12-31T23:59:59.999999Z",
    "offset that stays in range": "0001-01-01T00:30:00-01:00",
    "offset with seconds": "2026-01-01T00:00:00+00:00:30",
    "sub-microsecond digits": "2026-01-01T00:00:00.1234567Z",
    "negative zero offset": "2026-01-01T00:00:00-00:00",
}


@pytest.mark.parametrize("text", list(EDGE_TIMES.values()), ids=list(EDGE_TIMES))
def test_edge_timestamps_match_the_event_model_in_utc(text: str) -> None:
    raw = json.dumps(message(event_time=text, received_at=text)).encode()
    row = decode_row(raw)
    assert row.values == reference(raw).values
    assert row.values["event_time"].tzinfo is UTC and row.values["received_at"].tzinfo is UTC


EDGE_COSTS = ["0", "-0", "0E-30", "1E+5", " 1.5 ", "1_000", "99999999999999.999999", "0.0000005", "-0.0000005",
              "0.0000015", "2.5E-6", "-99999999999999.9999994", "1E+13"]


@pytest.mark.parametrize("cost", EDGE_COSTS)
def test_edge_costs_round_as_the_event_model_stores_them(cost: str) -> None:
    raw = json.dumps(message(cost=cost)).encode()
    assert decode_row(raw).values["cost"] == reference(raw).values["cost"]
    assert decode_row(raw).values["cost"].as_tuple().exponent == -6


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_other_json_encodings_give_the_same_values(encoding: str) -> None:
    """The standard library reads UTF-16 and UTF-32 too; a NUL there must become U+FFFD as it does in UTF-8
    (the NUL check on the raw bytes only sees UTF-8)."""
    data = message(content={"prompt": "a\u0000b"}, attributes={"k\u0000": ["\u0000"]}, user_email="x\u0000")
    raw = json.dumps(data).encode(encoding)
    row = decode_row(raw)
    assert row.values == reference(raw).values
    assert row.values["content"] == {"prompt": "a\ufffdb"}
    assert row.values["attributes"] == {"k\ufffd": ["\ufffd"]}


LONE_SURROGATES = {
    "in content": {"content": {"prompt": "a\ud800"}},
    "low half in a text column": {"model": "\udc00"},
    "in a key": {"attributes": {"\udbff": 1}},
    "deep in attributes": {"attributes": {"x": [{"y": ["\ud83d"]}]}},
    "beside a float": {"attributes": {"x": "\ud800", "ratio": 0.5}},
}


@pytest.mark.parametrize("changes", list(LONE_SURROGATES.values()), ids=list(LONE_SURROGATES))
def test_lone_surrogates_are_refused_as_the_event_model_refuses_them(changes: dict[str, Any]) -> None:
    # orjson refuses them and the standard library reads them; but they are not UTF-8, so the event model's
    # to_json, the hash and PostgreSQL would all fail on them. Refused here, they are dead-lettered.
    raw = json.dumps(message(**changes)).encode()  # ensure_ascii: written as \udxxx escapes
    with pytest.raises(ValueError):
        reference(raw)
    with pytest.raises(ValueError, match="lone surrogate"):
        decode_row(raw)


def test_surrogate_pairs_are_one_character() -> None:
    raw = json.dumps(message(content={"prompt": "😀"}, attributes={"😀": 0.5})).encode()
    assert b"\\ud83d\\ude00" in raw
    row = decode_row(raw)
    assert row.values == reference(raw).values and row.values["content"] == {"prompt": "😀"}


def test_duplicate_keys_keep_the_last_value_as_the_event_model_does() -> None:
    raw = json.dumps(message()).encode()[:-1] + b', "model": "other", "attributes": {"a": 1, "a": 2}}'
    row = decode_row(raw)
    assert row.values == reference(raw).values
    assert (row.values["model"], row.values["attributes"]) == ("other", {"a": 2})


def test_defaults_are_not_shared_between_rows() -> None:
    bare = json.dumps({k: v for k, v in message().items() if k in REQUIRED}).encode()
    first, second = decode_row(bare), decode_row(bare)
    first.values["attributes"]["x"] = 1
    assert second.values["attributes"] == {} and decode_row(bare).values["content"] == {}


def _random_message(rng: random.Random) -> dict[str, Any]:
    ints = [0, 1, -1, 2**53 - 1, 2**53, -(2**53), 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 2**100]
    texts = ["", "é", "😀", "\u0000", "\u001f", "\u2028", "<EMAIL>"]
    scalars = [*ints, *texts, 0.5, 1e16, 1e300, -0.0, True, False, None]

    def value(depth: int) -> Any:
        kind = rng.randrange(4 if depth < 3 else 1)
        if kind == 0:
            return rng.choice(scalars)
        if kind == 1:
            return [value(depth + 1) for _ in range(rng.randrange(3))]
        return {rng.choice(["a", "Z", "é", "\ufb01", "😀", "k\u0000"]) + str(i): value(depth + 1) for i in range(2)}

    changes: dict[str, Any] = {"attributes": {"x": value(0), "y": value(0)}}
    if rng.random() < 0.5:
        changes["content"] = {"prompt": rng.choice(texts), "response": rng.choice(texts)}
    if rng.random() < 0.5:
        changes["content_lengths"] = {"prompt": rng.choice(ints)}
    for field, bounds in (("input_tokens", BIGINT_RANGE), ("event_sequence", BIGINT_RANGE), ("status_code", INTEGER_RANGE)):
        if rng.random() < 0.3:
            changes[field] = rng.choice([n for n in ints if n in bounds])
    if rng.random() < 0.5:
        changes["cost"] = rng.choice([None, *EDGE_COSTS])
    if rng.random() < 0.5:
        changes["event_time"] = rng.choice([*EDGE_TIMES.values(), "2026-11-28T14:00:00.5+02:00"])
    if rng.random() < 0.3:
        changes["user_email"] = rng.choice(texts)
    return message(**changes)


@pytest.mark.parametrize("seed", range(200))
def test_random_messages_give_the_event_models_values(seed: int) -> None:
    rng = random.Random(seed)
    raw = json.dumps(_random_message(rng), ensure_ascii=rng.random() < 0.5).encode()
    row = decode_row(raw)
    expected = reference(raw).values
    assert row.values == expected
    assert strictly_equal(row.values, expected)


def strictly_equal(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 == 1.0 and 2**64 == float(2**64) in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strictly_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strictly_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def test_a_shape_found_valid_lets_no_other_shape_through() -> None:
    # Fields and types are checked once per shape (names in order, type of each value): a message with the
    # same names in the same order but one value of another type is a shape of its own, and refused.
    valid = message()
    decode_row(json.dumps(valid).encode())
    for field, value in (("input_tokens", "1200"), ("content_captured", 1), ("attributes", []), ("event_id", None)):
        with pytest.raises(ValueError, match=field):
            decode_row(json.dumps({**valid, field: value}).encode())
    with pytest.raises(ValueError, match="unknown fields"):
        decode_row(json.dumps({**valid, "extra": 1}).encode())
    assert decode_row(json.dumps(valid).encode()).values == reference(json.dumps(valid).encode()).values
