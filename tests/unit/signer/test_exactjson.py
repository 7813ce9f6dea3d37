"""shared.exactjson: orjson's speed, the standard library's exactness. Every integer comes back as the exact
int the text holds, at any size; the result is always what json.loads gives, types included."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import orjson
import pytest

from shared import exactjson
from tests.unit.signer.test_rows import strictly_equal

U64_MAX = 2**64 - 1
I64_MIN = -(2**63)

DOCUMENTS: dict[str, tuple[bytes, Any, bool]] = {
    # name: (JSON text, the value it must decode to, whether it holds a float)
    "u64 maximum stays with orjson": (b"[18446744073709551615]", [U64_MAX], False),
    "i64 minimum stays with orjson": (b"[-9223372036854775808]", [I64_MIN], False),
    "one past u64": (b"[18446744073709551616]", [U64_MAX + 1], False),
    "one past i64 downwards": (b"[-9223372036854775809]", [I64_MIN - 1], False),
    "a hundred digits": (b'{"n": ' + b"9" * 100 + b"}", {"n": int("9" * 100)}, False),
    "big integer deep down": (b'{"a": [{"b": [1, 36893488147419103232]}]}', {"a": [{"b": [1, 2**65]}]}, False),
    "big integer as a key's value beside a float": (
        b'{"f": 0.5, "n": 36893488147419103232}',
        {"f": 0.5, "n": 2**65},
        True,
    ),
    "2^53 + 1 is not rounded": (b"[9007199254740993]", [2**53 + 1], False),
    "negative zero integer": (b"-0", 0, False),
    "negative zero float": (b"-0.0", -0.0, True),
    "integer-valued float": (b"[1.0]", [1.0], True),
    "exponent without a point": (b"[1E2]", [100.0], True),
    "float beyond double range": (b"[1e400]", [math.inf], True),
    "Infinity": (b'{"x": -Infinity}', {"x": -math.inf}, True),
    "surrogate pair escape": (b'"\\ud83d\\ude00"', "😀", False),
    "lone low surrogate": (b'["\\udc00", 1]', ["\udc00", 1], False),
    "lone surrogate beside a big integer": (b'["\\ud800", 18446744073709551616]', ["\ud800", 2**64], False),
    "NUL escape": (b'"a\\u0000b"', "a\x00b", False),
    "duplicate keys: the last wins": (b'{"a": 1, "a": 2}', {"a": 2}, False),
    "UTF-8 byte order mark": (b'\xef\xbb\xbf{"a": 1}', {"a": 1}, False),
    "UTF-16": ('{"a": [18446744073709551616]}'.encode("utf-16"), {"a": [2**64]}, False),
    "whitespace around": (b' \n\t{"a" : [ ] }\r\n', {"a": []}, False),
    "scalar document": (b"true", True, False),
    "empty containers": (b'[{}, [], ""]', [{}, [], ""], False),
}


@pytest.mark.parametrize(("data", "expected", "has_float"), list(DOCUMENTS.values()), ids=list(DOCUMENTS))
def test_documents_decode_exactly_as_the_standard_library_does(data: bytes, expected: Any, has_float: bool) -> None:
    value, found_float = exactjson.decode(data)
    assert found_float is has_float
    assert strictly_equal(value, expected)
    assert strictly_equal(value, json.loads(data))
    assert strictly_equal(exactjson.loads(data), value)


def test_nan_is_decoded_and_counts_as_a_float() -> None:
    value, has_float = exactjson.decode(b'{"x": [NaN]}')
    assert has_float and math.isnan(value["x"][0])


def test_orjson_alone_would_have_lost_the_integer() -> None:
    # The reason for this module: orjson reads an integer beyond 64 bits as a float, and 2**64 + 1 as 2**64.
    assert type(orjson.loads(b"18446744073709551617")) is float
    assert exactjson.loads(b"18446744073709551617") == 2**64 + 1


BAD: dict[str, bytes] = {
    "empty": b"",
    "unterminated object": b"{",
    "unterminated string": b'"abc',
    "trailing garbage": b'{"a": 1} x',
    "two documents": b"{} {}",
    "single quotes": b"{'a': 1}",
    "trailing comma": b"[1, 2,]",
    "invalid UTF-8": b'"\xff"',
    "raw control character in a string": b'"a\x01b"',
    "bare word": b"nope",
    "leading plus": b"+1",
    "leading zeros": b"01",
    "hex number": b"0x10",
    "comment": b"[1] // no",
}


@pytest.mark.parametrize("data", list(BAD.values()), ids=list(BAD))
def test_what_is_not_json_is_refused_with_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        exactjson.decode(data)
    with pytest.raises(ValueError):
        exactjson.loads(data)
    with pytest.raises(ValueError):
        json.loads(data)  # the reference refuses it too


@pytest.mark.parametrize("depth", [1_100, 100_000])
def test_json_nested_too_deeply_is_refused_with_a_value_error(depth: int) -> None:
    # orjson stops at 1,024 levels; the standard library then runs out of stack (RecursionError).
    data = b"[" * depth + b"]" * depth
    with pytest.raises(ValueError, match="nested too deeply"):
        exactjson.loads(data)


CONTAINS_FLOAT: dict[str, tuple[Any, bool]] = {
    "float": (0.5, True),
    "int": (1, False),
    "bool": (True, False),
    "none": (None, False),
    "text": ("0.5", False),
    "float in a dict": ({"a": 1, "b": 2.0}, True),
    "float in a list": ([1, 2, 3.0], True),
    "float deep down": ({"a": [{"b": [[{"c": -0.0}]]}]}, True),
    "no float deep down": ({"a": [{"b": [[{"c": 0}]]}]}, False),
    "float as the first of many": ([0.1, *range(100)], True),
    "empty": ({}, False),
}


@pytest.mark.parametrize(("value", "expected"), list(CONTAINS_FLOAT.values()), ids=list(CONTAINS_FLOAT))
def test_contains_float(value: Any, expected: bool) -> None:
    assert exactjson.contains_float(value) is expected


def _random_document(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(3 if depth < 4 else 1)
    if kind == 0:
        return rng.choice(
            [0, -1, 2**53 + 1, U64_MAX, U64_MAX + 1, I64_MIN, I64_MIN - 1, 10**40, 0.1, 1e300, -0.0, "x", "😀",
             "\u0000", True, False, None]
        )
    if kind == 1:
        return [_random_document(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{i}": _random_document(rng, depth + 1) for i in range(rng.randrange(4))}


@pytest.mark.parametrize("seed", range(300))
def test_random_documents_decode_as_the_standard_library_does(seed: int) -> None:
    rng = random.Random(seed)
    data = json.dumps(_random_document(rng), ensure_ascii=rng.random() < 0.5).encode()
    value, has_float = exactjson.decode(data)
    expected = json.loads(data)
    assert strictly_equal(value, expected)
    assert has_float is exactjson.contains_float(expected)
