"""JSON decoding that keeps every integer exact, at orjson's speed where that is safe.

orjson reads integers beyond 64 bits as floats, which would change what gets hashed. So a document that
orjson decodes with any float in it is decoded again by the standard library, which is exact and was the
reference before; so is anything orjson refuses (lone surrogates, NaN). Floats are rare in audit rows.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def contains_float(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return True
    if kind is dict:
        for item in value.values():
            item_kind = type(item)
            if item_kind is float or ((item_kind is dict or item_kind is list) and contains_float(item)):
                return True
        return False
    if kind is list:
        return any(contains_float(item) for item in value)
    return False


def decode(data: bytes) -> tuple[Any, bool]:
    """The decoded value, and whether it holds a float anywhere; ``ValueError`` for anything that is not JSON."""
    try:
        return _decode(data)
    except RecursionError as exc:  # deeper than the standard library (or the float check) can follow
        raise ValueError("JSON nested too deeply") from exc


def _decode(data: bytes) -> tuple[Any, bool]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = json.loads(data)
        return value, contains_float(value)
    if contains_float(value):
        value = json.loads(data)
        return value, contains_float(value)
    return value, False


def loads(data: bytes) -> Any:
    return decode(data)[0]
