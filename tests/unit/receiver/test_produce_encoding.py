"""Produce requests encoded into one buffer, and record batches built with a hardware CRC, must be aiokafka's own
bytes (every request version it may send; records of every shape)."""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import aiokafka
import pytest
from aiokafka.conn import AIOKafkaConnection
from aiokafka.producer import message_accumulator
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.protocol.struct import Struct
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from services.receiver import produce_encoding
from services.receiver.produce_encoding import (
    PRODUCE_REQUEST_STRUCTS,
    SEPARATE_FROM,
    RecordBatchBuilder,
    Segments,
    encode_into_one_buffer,
    install,
    send,
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


def _builders(batch_size: int = 1_000_000, compression_type: int = 0) -> tuple[Any, Any]:
    options: dict[str, Any] = {"magic": 2, "compression_type": compression_type, "is_transactional": 0, "producer_id": -1,
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


def _built(records: list[Record]) -> Segments:
    _, ours = _builders()
    for offset, (timestamp, key, value, headers) in enumerate(records):
        ours.append(offset, timestamp=timestamp, key=key, value=value, headers=headers)
    built = ours.build()
    assert isinstance(built, Segments)
    return built


def test_large_values_are_held_not_copied_and_small_ones_share_a_buffer() -> None:
    large, small = os.urandom(SEPARATE_FROM), os.urandom(SEPARATE_FROM - 1)
    built = _built([(1, b"k", small, []), (2, b"k", large, [("h", b"v")]), (3, None, small, []), (4, None, small, [])])
    assert len(built.buffers) == 3  # header and the first record; the large value; the records after it
    assert built.buffers[1] is large
    assert len(built) == sum(map(len, built.buffers))


def test_a_compressed_batch_is_built_whole_and_reads_back() -> None:
    theirs, ours = _builders(compression_type=RecordBatchBuilder.CODEC_GZIP)
    records = RECORDS["several, timestamps going back"] + RECORDS["one raw batch"]
    for offset, (timestamp, key, value, headers) in enumerate(records):
        ours.append(offset, timestamp=timestamp, key=key, value=value, headers=headers)
        theirs.append(offset, timestamp=timestamp, key=key, value=value, headers=headers)
        assert ours.size() == theirs.size()
    built = ours.build()
    assert isinstance(built, bytearray)
    batch = DefaultRecordBatch(bytes(built))
    assert batch.validate_crc() and batch.compression_type == RecordBatchBuilder.CODEC_GZIP
    assert [record.value for record in batch] == [None if value is None else bytes(value) for _, _, value, _ in records]


@pytest.mark.parametrize("struct_class", PRODUCE_REQUEST_STRUCTS, ids=lambda cls: cls.__name__)
def test_a_request_holding_built_batches_encodes_as_aiokafka_does(struct_class: type[Any]) -> None:
    first, second = _built(RECORDS["one raw batch"]), _built(RECORDS["several, timestamps going back"])

    def request(batches: list[Any]) -> Any:
        fields: list[Any] = [-1, 15_000, [("otel.logs.raw", [(0, batches[0]), (3, b"")]),
                                          ("otel.metrics.raw", [(1, batches[1])])]]
        return struct_class(*(["a-transaction", *fields] if struct_class.API_VERSION >= 3 else fields))

    encoded = encode_into_one_buffer(request([first, second]))
    assert isinstance(encoded, Segments)
    assert bytes(encoded) == Struct.encode(request([bytes(first), bytes(second)]))
    assert b"header" + encoded is not encoded and bytes(b"header" + encoded) == b"header" + bytes(encoded)


class _RecordingWriter:
    def __init__(self) -> None:
        self.writes: list[list[Any]] = []

    def write(self, data: Any) -> None:
        self.writes.append([data])

    def writelines(self, data: list[Any]) -> None:
        self.writes.append(list(data))

    async def drain(self) -> None:
        return None


def test_the_connection_writes_a_produce_request_as_aiokafka_would_in_one_vectored_write() -> None:
    install()
    batch = _built(RECORDS["one raw batch"])
    large_value = RECORDS["one raw batch"][0][2]
    writer = _RecordingWriter()

    async def send_one() -> None:
        connection = AIOKafkaConnection("broker", 9092, client_id="receiver")
        connection._writer = writer
        connection._versions = {ProduceRequest.API_KEY: (0, 7)}
        await send(connection, ProduceRequest(None, -1, 15_000, [("otel.logs.raw", [(2, batch)])]),
                   expect_response=False)

    asyncio.run(send_one())
    (written,) = writer.writes
    assert any(buffer is large_value for buffer in written)  # handed to the transport, not copied
    request_struct = ProduceRequest(None, -1, 15_000, [("otel.logs.raw", [(2, bytes(batch))])]).prepare(
        {ProduceRequest.API_KEY: (0, 7)})
    message = request_struct.build_request_header(correlation_id=1, client_id="receiver").encode() + Struct.encode(
        request_struct)
    assert b"".join(written) == struct.pack(">i", len(message)) + message


def test_install_gives_the_connection_this_send() -> None:
    install()
    assert AIOKafkaConnection.send is send


def test_another_aiokafka_version_keeps_its_own_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # The copied connection method and encoders match aiokafka 0.14.0 only: under another version install() leaves
    # aiokafka's own code in place.
    monkeypatch.setattr(aiokafka, "__version__", "0.15.0")
    async def aiokafkas_own_send(*_: object, **__: object) -> None:
        return None

    monkeypatch.setattr(AIOKafkaConnection, "send", aiokafkas_own_send)
    produce_encoding.install()
    assert AIOKafkaConnection.send is aiokafkas_own_send
