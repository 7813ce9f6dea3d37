"""Produce requests encoded into one buffer must be aiokafka's own bytes, for every version it may send."""

from __future__ import annotations

import os
from typing import Any

import pytest
from aiokafka.protocol.struct import Struct

from services.receiver.produce_encoding import PRODUCE_REQUEST_STRUCTS, encode_into_one_buffer


def _topics() -> list[tuple[str, list[tuple[int, bytes | None]]]]:
    return [
        ("otel.logs.raw", [(0, os.urandom(70_000)), (3, b""), (5, os.urandom(17))]),
        ("otel.metrics.raw", [(1, os.urandom(1_000))]),
        ("empty", []),
    ]


@pytest.mark.parametrize("struct_class", PRODUCE_REQUEST_STRUCTS, ids=lambda cls: cls.__name__)
def test_every_produce_request_version_encodes_as_aiokafka_does(struct_class: type[Any]) -> None:
    fields: list[Any] = [-1, 15_000, _topics()]
    if struct_class.API_VERSION >= 3:
        fields = ["a-transaction", *fields]
    request = struct_class(*fields)
    assert bytes(encode_into_one_buffer(request)) == Struct.encode(request)
    if struct_class.API_VERSION >= 3:
        no_transaction = struct_class(None, 1, 30_000, _topics())
        assert bytes(encode_into_one_buffer(no_transaction)) == Struct.encode(no_transaction)


def test_a_null_record_set_encodes_as_aiokafka_does() -> None:
    struct_class = PRODUCE_REQUEST_STRUCTS[-1]
    request = struct_class(None, -1, 1_000, [("topic", [(0, None)])])
    assert bytes(encode_into_one_buffer(request)) == Struct.encode(request)


def test_a_request_with_the_wrong_number_of_fields_is_refused_as_aiokafka_refuses_it() -> None:
    struct_class = PRODUCE_REQUEST_STRUCTS[-1]
    request = struct_class(None, -1, 1_000, [("topic", [(0, b"x", "extra")])])
    with pytest.raises(ValueError, match="field count"):
        Struct.encode(request)
    with pytest.raises(ValueError, match="field count"):
        encode_into_one_buffer(request)
