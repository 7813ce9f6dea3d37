"""The fast ways of computing canonical bytes give exactly the bytes of the reference (RFC 8785 via the
rfc8785 package) or step aside; and JSON is decoded with every integer exact."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

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
