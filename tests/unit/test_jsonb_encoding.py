"""The JSONB encoder's shortcut for the empty object gives the bytes the general encoding gives."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from shared.db.pool import _JSONB_VERSION, _encode_jsonb

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _general(value: Any) -> bytes:
    """What the encoder writes for any value it takes: orjson's encoding, the standard library's for integers
    beyond 64 bits."""
    try:
        return _JSONB_VERSION + orjson.dumps(value)
    except TypeError:
        return _JSONB_VERSION + json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def test_the_empty_object_and_the_other_empty_values() -> None:
    empties: tuple[Any, ...] = ({}, [], "", 0, False, None)
    for value in empties:
        assert _encode_jsonb(value) == _general(value), value


@given(_JSON)
def test_any_value_encodes_as_the_general_path_does(value: Any) -> None:
    assert _encode_jsonb(value) == _general(value)
