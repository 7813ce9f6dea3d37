"""Produce requests encoded into one buffer, and record batches built with a hardware CRC, must be aiokafka's own
bytes (every request version it may send; records of every shape)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from aiokafka.producer import message_accumulator
from aiokafka.protocol.struct import Struct
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from services.receiver.produce_encoding import (
    PRODUCE_REQUEST_STRUCTS,
    RecordBatchBuilder,
    encode_into_one_buffer,
    install,
)


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


# Record batches: RecordBatchBuilder against aiokafka's own (compiled) builder, byte for byte.

Record = tuple[int, bytes | None, Any, list[tuple[str, bytes | None]]]


def _builders(batch_size: int = 1_000_000) -> tuple[Any, Any]:
    options: dict[str, Any] = {"magic": 2, "compression_type": 0, "is_transactional": 0, "producer_id": -1,
                               "producer_epoch": -1, "base_sequence": 0, "batch_size": batch_size}
    return DefaultRecordBatchBuilder(**options), RecordBatchBuilder(**options)


RECORDS: dict[str, list[Record]] = {
    "one raw batch": [(1_700_000_000_000, b"tenant-a", os.urandom(50_000),
                       [("auth.key_id", b"k" * 16), ("auth.mac", b"m" * 64), ("raw.tenant", b"tenant-a")])],
    "several, timestamps going back": [
        (1_000, b"k", b"v", []),
        (990, None, b"w" * 70, [("h", None)]),
        (5_000_000, b"", None, [("\u00e9", b"")]),
        (1_000, b"k" * 64, bytearray(b"x" * 4_096), [("n" * 63, b"y" * 64)] * 3),
        (1_001, b"k", memoryview(b"z" * 8_191), [("a", b"b" * 4_095), ("c", b"d" * 4_096)]),
    ],
}


@pytest.mark.parametrize("name", list(RECORDS))
def test_record_batches_are_aiokafkas_bytes(name: str) -> None:
    theirs, ours = _builders()
    for offset, (timestamp, key, value, headers) in enumerate(RECORDS[name]):
        their_metadata = theirs.append(offset, timestamp=timestamp, key=key, value=value, headers=headers)
        our_metadata = ours.append(offset, timestamp=timestamp, key=key, value=value, headers=headers)
        assert (our_metadata.offset, our_metadata.size, our_metadata.timestamp) == (
            their_metadata.offset, their_metadata.size, their_metadata.timestamp)
        assert ours.size() == theirs.size()
    assert bytes(ours.build()) == bytes(theirs.build())


def test_a_full_batch_refuses_the_next_record_as_aiokafkas_does() -> None:
    theirs, ours = _builders(batch_size=2_000)
    outcomes = []
    for offset, size in enumerate([1_500, 400, 10, 3_000]):
        headers = [("h", b"v")]
        their_metadata = theirs.append(offset, timestamp=7, key=None, value=b"x" * size, headers=headers)
        our_metadata = ours.append(offset, timestamp=7, key=None, value=b"x" * size, headers=headers)
        outcomes.append((their_metadata is None, our_metadata is None))
        assert ours.size() == theirs.size()
    assert [ours_full for _, ours_full in outcomes] == [theirs_full for theirs_full, _ in outcomes]
    assert any(full for full, _ in outcomes)
    assert bytes(ours.build()) == bytes(theirs.build())


def test_a_built_batch_reads_back_with_a_valid_crc() -> None:
    _, ours = _builders()
    ours.append(0, timestamp=5, key=b"k", value=b"value", headers=[("h", b"1")])
    batch = DefaultRecordBatch(bytes(ours.build()))
    assert batch.validate_crc()
    assert [(record.key, record.value, record.headers) for record in batch] == [(b"k", b"value", [("h", b"1")])]


def test_install_gives_the_producer_this_builder() -> None:
    install()
    assert getattr(message_accumulator, "DefaultRecordBatchBuilder") is RecordBatchBuilder  # noqa: B009
