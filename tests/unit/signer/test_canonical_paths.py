"""The fast ways of computing canonical bytes give exactly the bytes of the reference (RFC 8785 via the
rfc8785 package) or step aside; and JSON is decoded with every integer exact."""

from __future__ import annotations

import enum
import json
import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import rfc8785

from services.signer.rows import decode_row
from shared import exactjson
from shared.canonical import EVENT_COLUMNS
from shared.chain import (
    HASHED_COLUMNS,
    _canonical_bytes_fast,
    _normalise,
    canonical_bytes,
    canonical_bytes_checked,
    format_timestamp,
)
from shared.jcs import canonicalize
from tests.unit.signer.test_rows import message


def reference(row: dict[str, Any]) -> bytes:
    return bytes(rfc8785.dumps({column: _normalise(row[column]) for column in HASHED_COLUMNS}))


def chained(values: dict[str, Any]) -> dict[str, Any]:
    return {**values, "chain_seq": 42, "signing_key_id": "ab" * 16, "hash_version": 1}


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.choice(["str", "int", "bigint", "bool", "none", "float", "dict", "list"] if depth < 3 else ["str"])
    if kind == "str":
        return rng.choice(["", "a", "é", "😀", "line\nbreak", "quote\"", "\u2028", "tab\t", "back\\slash", "<EMAIL>"])
    if kind == "int":
        return rng.randint(-(2**53) + 1, 2**53 - 1)
    if kind == "bigint":
        return rng.choice([2**53, -(2**53), 2**63, 2**70])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "float":
        return rng.choice([0.25, 1e16, 1e21, 1.5e-7, 123.456, -0.0])
    if kind == "dict":
        return {rng.choice(["a", "b", "Z", "é", "😀", "\ufb01", "k"]) + str(i): random_json(rng, depth + 1) for i in range(3)}
    return [random_json(rng, depth + 1) for _ in range(2)]


@pytest.mark.parametrize("seed", range(300))
def test_general_canonical_bytes_match_rfc8785_for_random_rows(seed: int) -> None:
    rng = random.Random(seed)
    raw = json.dumps(message(attributes={"x": random_json(rng), "y": random_json(rng)})).encode()
    values = chained(decode_row(raw).values)
    assert canonical_bytes(values) == reference(values)
    checked = canonical_bytes_checked(values) if decode_row(raw).plain else None
    assert checked in (None, reference(values))


EDGES: dict[str, dict[str, Any]] = {
    "typical": {},
    "whole-second event time": {"event_time": "2026-11-28T12:00:00+00:00"},
    "whole-second receive time": {"received_at": "2026-11-28T12:00:01+00:00"},
    "integer at 2^53 - 1": {"input_tokens": 2**53 - 1},
    "integer at 2^53": {"input_tokens": 2**53},
    "large cost": {"cost": "12345678901234.123456"},
    "zero cost": {"cost": "0"},
    "no cost": {"cost": None},
    "escapes": {"content": {"prompt": "\u0007\b\f\n\r\t\"\\/\u007f\u2028"}},
    "astral text": {"content": {"prompt": "😀 and ﬁ"}},
    "many attributes": {"attributes": {f"k{i}": f"v{i}" for i in range(50)}},
}


@pytest.mark.parametrize("changes", list(EDGES.values()), ids=list(EDGES))
def test_fast_paths_match_the_reference(changes: dict[str, Any]) -> None:
    row = decode_row(json.dumps(message(**changes)).encode())
    values = chained(row.values)
    assert canonical_bytes(values) == reference(values)
    fast = _canonical_bytes_fast(values)
    assert fast is None or fast == reference(values)
    assert row.plain
    checked = canonical_bytes_checked(values)
    if "input_tokens" in changes and changes["input_tokens"] > 2**53 - 1:
        assert checked is None  # the general path writes it as a string
    else:
        assert checked == reference(values)


NOT_FAST: dict[str, dict[str, Any]] = {
    "float": {"attributes": {"x": 0.5}},
    "non-ASCII key": {"attributes": {"é": 1}},
    "naive timestamp": {"event_time": datetime(2026, 1, 1)},
    "text cost": {"cost": "1.0"},
    "bytes in a text column": {"model": b"x"},
}


@pytest.mark.parametrize("changes", list(NOT_FAST.values()), ids=list(NOT_FAST))
def test_the_fast_path_steps_aside_where_it_cannot_be_exact(changes: dict[str, Any]) -> None:
    values = chained(decode_row(json.dumps(message()).encode()).values) | changes
    assert _canonical_bytes_fast(values) is None


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
        datetime(2026, 11, 28, 12, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 11, 28, 14, 0, 0, 999999, tzinfo=timezone(timedelta(hours=2))),
        datetime(1, 1, 1, tzinfo=UTC),
    ],
)
def test_timestamps_format_alike_whatever_their_zone(value: datetime) -> None:
    utc = value.astimezone(UTC)
    expected = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
        f".{utc.microsecond:06d}Z"
    )
    assert format_timestamp(value) == expected


EXACT: dict[str, tuple[bytes, Any, bool]] = {
    "object": (b'{"a": 1, "b": [true, null, "x"]}', {"a": 1, "b": [True, None, "x"]}, False),
    "integer beyond 64 bits": (b'{"a": 18446744073709551616}', {"a": 2**64}, False),
    "negative integer beyond 64 bits": (b"[-9223372036854775809]", [-(2**63) - 1], False),
    "u64 maximum": (b"18446744073709551615", 2**64 - 1, False),
    "float": (b'{"a": 0.5}', {"a": 0.5}, True),
    "exponent": (b"[1e16]", [1e16], True),
    "NaN": (b"[NaN]", None, True),
    "lone surrogate": (b'"\\ud800"', "\ud800", False),
}


@pytest.mark.parametrize(("data", "expected", "has_float"), list(EXACT.values()), ids=list(EXACT))
def test_json_is_decoded_exactly(data: bytes, expected: Any, has_float: bool) -> None:
    value, found_float = exactjson.decode(data)
    assert found_float is has_float
    if expected is None:
        assert math.isnan(value[0])
    else:
        assert value == expected and type(value) is type(expected)
        assert exactjson.loads(data) == json.loads(data)


def test_invalid_json_is_refused() -> None:
    with pytest.raises(ValueError):
        exactjson.loads(b"{")


def test_event_columns_are_all_hashed() -> None:
    assert set(EVENT_COLUMNS) <= set(HASHED_COLUMNS)
    assert Decimal("1.5") == decode_row(json.dumps(message(cost="1.5")).encode()).values["cost"]


# --- The fast path against the general path, as canonical_bytes would take it without the fast path --------------


def general(row: dict[str, Any]) -> bytes:
    return canonicalize({column: _normalise(row[column]) for column in HASHED_COLUMNS})


def fast_agrees(row: dict[str, Any]) -> bytes | None:
    """The fast bytes, after checking them against the general path and the reference; None where it steps aside."""
    expected = general(row)
    assert expected == reference(row)
    fast = _canonical_bytes_fast(row)
    assert fast is None or fast == expected
    assert canonical_bytes(row) == expected
    return fast


BOUNDARY_INTS = [0, -1, 2**53 - 1, -(2**53 - 1), 2**53, -(2**53), 2**53 + 1, 2**63 - 1, -(2**63), 2**64, 2**100]
INT_PLACES: dict[str, Callable[[int], dict[str, Any]]] = {
    "token column": lambda n: {"input_tokens": n},
    "sequence column": lambda n: {"event_sequence": n},
    "chain_seq": lambda n: {"chain_seq": n},
    "content length": lambda n: {"content_lengths": {"prompt": n}},
    "redaction count": lambda n: {"redacted_fields": {"prompt": {"EMAIL": n}}},
    "attribute": lambda n: {"attributes": {"n": n}},
    "attribute list": lambda n: {"attributes": {"n": [1, [n]]}},
}
INT_CASES = [(place, n) for place in INT_PLACES for n in BOUNDARY_INTS]


@pytest.mark.parametrize(("place", "n"), INT_CASES, ids=[f"{p}={n}" for p, n in INT_CASES])
def test_integers_on_either_side_of_2_to_the_53_match_the_general_path(place: str, n: int) -> None:
    row = chained(decode_row(json.dumps(message()).encode()).values) | INT_PLACES[place](n)
    fast = fast_agrees(row)
    safe = -(2**53 - 1) <= n <= 2**53 - 1
    # Exact integers go into the fast bytes as numbers; the others the general path writes as strings.
    assert (fast is not None) is safe
    assert (f'"{n}"'.encode() in general(row)) is not safe


REQUIRED_COLUMNS = ("event_id", "tenant_id", "org_id", "plane", "event_type", "event_time", "received_at")
FAST_ROWS: dict[str, dict[str, Any]] = {
    "nulls everywhere they may be": {
        c: None for c in EVENT_COLUMNS if c not in (*REQUIRED_COLUMNS, "claimed_org_mismatch", "content_captured")
    },
    "empty JSON columns": {"content": {}, "content_lengths": {}, "redacted_fields": {}, "attributes": {}},
    "booleans": {"success": False, "claimed_org_mismatch": True, "content_captured": False},
    "controls and quotes": {"model": "\u0000\u001f\"\\\u007f", "content": {"prompt": "\b\f\n\r\t"}},
    "non-ASCII text, ASCII keys": {"user_email": "ü@例え.jp", "attributes": {"k": "😀\u2028\u2029\ufeff"}},
    "ASCII keys that sort oddly": {"attributes": {"_": 1, "Z": 2, "a": 3, "~": 4, "": 5, "0": 6, "A0": 7}},
    "JSON values that are not objects": {"content": "text", "attributes": [1, "a", None, True, []]},
    "JSON null": {"attributes": None},
    "cost with trailing digits": {"cost": Decimal("1.1234564")},  # quantised on the way, alike on both paths
    "cost negative": {"cost": Decimal("-0.000001")},
    "UTC from another zone": {"event_time": datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))},
    "named UTC": {"received_at": datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))},
    "zone with DST": {"event_time": datetime(2026, 7, 1, 12, 0, 0, 5, tzinfo=ZoneInfo("Europe/Berlin"))},
    "year 1": {"event_time": datetime(1, 1, 1, tzinfo=UTC)},
    "year 9999": {"received_at": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)},
}


@pytest.mark.parametrize("changes", list(FAST_ROWS.values()), ids=list(FAST_ROWS))
def test_the_fast_path_gives_the_general_bytes(changes: dict[str, Any]) -> None:
    row = chained(decode_row(json.dumps(message()).encode()).values) | changes
    assert fast_agrees(row) is not None


class Label(str):
    pass


class Level(enum.IntEnum):
    HIGH = 1


class Attributes(dict[str, Any]):
    pass


MORE_NOT_FAST: dict[str, dict[str, Any]] = {
    "str subclass in a text column": {"model": Label("x")},
    "IntEnum in an integer column": {"input_tokens": Level.HIGH},
    "float in an integer column": {"input_tokens": 1.0},
    "Decimal in an integer column": {"input_tokens": Decimal(1)},
    "dict subclass as a JSON column": {"attributes": Attributes(a=1)},
    "tuple in a JSON column": {"attributes": {"t": (1, 2)}},
    "integer key in a JSON column": {"attributes": {1: "a"}},
    "float deep in a JSON column": {"content_lengths": {"prompt": [0.5]}},
    "naive receive time": {"received_at": datetime(2026, 1, 1)},
    "timestamp as text": {"event_time": "2026-01-01T00:00:00.000000Z"},
    "cost as float": {"cost": 0.5},
    "cost as int": {"cost": 1},
    "lone surrogate": {"model": "\ud800"},  # the general path decides (and refuses it)
}


@pytest.mark.parametrize("changes", list(MORE_NOT_FAST.values()), ids=list(MORE_NOT_FAST))
def test_the_fast_path_steps_aside_for_what_it_does_not_write_exactly(changes: dict[str, Any]) -> None:
    row = chained(decode_row(json.dumps(message()).encode()).values) | changes
    assert _canonical_bytes_fast(row) is None


def test_the_fast_path_does_not_change_the_row() -> None:
    row = chained(decode_row(json.dumps(message(event_time="2026-01-01T00:00:00+00:00")).encode()).values)
    before = dict(row)
    assert _canonical_bytes_fast(row) == general(row)
    assert row == before and all(type(row[c]) is type(before[c]) for c in row)


def _random_scalar(rng: random.Random) -> Any:
    return rng.choice(["", "x", "é", "\u0000", None, True, False, 0, -5, 2**53 - 1, 2**53, -(2**60)])


@pytest.mark.parametrize("seed", range(300))
def test_random_rows_of_any_column_types_agree_or_step_aside(seed: int) -> None:
    rng = random.Random(seed)
    row = chained(decode_row(json.dumps(message()).encode()).values)
    for column in rng.sample([c for c in HASHED_COLUMNS if c not in ("event_time", "received_at", "cost")], 6):
        row[column] = random_json(rng) if rng.random() < 0.5 else _random_scalar(rng)
    if rng.random() < 0.3:
        row["cost"] = rng.choice([None, Decimal("0"), Decimal("-1.5"), Decimal("12345678901234.123456")])
    fast_agrees(row)


# --- format_timestamp: the branch for tzinfo is UTC and the general one -----------------------------------------

INSTANTS = [
    datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
    datetime(2026, 11, 28, 12, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 11, 28, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 2, 29, 0, 0, 0, 500000, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(1, 1, 2, tzinfo=UTC),
    datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC),
]
ZONES = {
    "UTC singleton": UTC,
    "zero offset with a name": timezone(timedelta(0), "UTC"),
    "ZoneInfo UTC": ZoneInfo("UTC"),
    "+05:30": timezone(timedelta(hours=5, minutes=30)),
    "-12:00": timezone(timedelta(hours=-12)),
    "+14:00": timezone(timedelta(hours=14)),
    "offset with seconds and microseconds": timezone(timedelta(seconds=-3599, microseconds=-7)),
    "Europe/Berlin": ZoneInfo("Europe/Berlin"),
    "America/St_Johns": ZoneInfo("America/St_Johns"),
}
TIMESTAMP_CASES = [(instant, zone) for instant in INSTANTS for zone in ZONES]


def _strftime_reference(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


@pytest.mark.parametrize(
    ("instant", "zone"), TIMESTAMP_CASES, ids=[f"{i.isoformat()}@{z}" for i, z in TIMESTAMP_CASES]
)
def test_every_zone_formats_as_the_utc_branch(instant: datetime, zone: str) -> None:
    local = instant.astimezone(ZONES[zone])
    assert (local.tzinfo is UTC) is (zone == "UTC singleton")
    assert format_timestamp(local) == format_timestamp(instant)
    assert len(format_timestamp(instant)) == len("2026-11-28T12:00:00.000000Z")
    if instant.year >= 1000:  # strftime does not zero-pad years below 1000 on every platform
        assert format_timestamp(local) == _strftime_reference(instant)


@pytest.mark.parametrize("fold", [0, 1])
def test_an_ambiguous_local_time_formats_as_the_instant_it_names(fold: int) -> None:
    # 2026-10-25 02:30 happens twice in Berlin; fold picks which.
    local = datetime(2026, 10, 25, 2, 30, fold=fold, tzinfo=ZoneInfo("Europe/Berlin"))
    assert format_timestamp(local) == ("2026-10-25T00:30:00.000000Z" if fold == 0 else "2026-10-25T01:30:00.000000Z")
    assert format_timestamp(local) == format_timestamp(local.astimezone(UTC))
