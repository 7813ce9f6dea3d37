"""Produce requests encoded into one buffer, byte for byte as aiokafka encodes them.

aiokafka encodes a request field by field, each level joining its children's bytes into new bytes: the
record batches of a produce request (every request's body, a megabyte per partition at most) are copied
once per level, six times before the connection adds its own two. The receiver produces every byte it
accepts, so those copies were a visible share of its CPU. ``encode_into_one_buffer`` walks the same schema
(aiokafka's own type objects, so every field is encoded exactly as before) and appends each field to one
bytearray: the record batches are copied once. ``install`` puts it in place of ``encode`` on aiokafka's
produce request structs, in this process only; tests/unit/receiver/test_produce_encoding.py holds it to
aiokafka's own output for every version.

The record batches themselves: aiokafka's compiled builder computes each batch's CRC-32C in software, byte
by byte (66 us for a 100 KB batch, most of its ``build``) and copies every value twice. ``RecordBatchBuilder``
writes the same bytes (aiokafka's own Python builder's layout) with each value copied once and the CRC from
the ``crc32c`` package, which uses the CPU's CRC32 instruction (under 5 us for 100 KB). ``install`` makes the
producer's batches use it; the same test module holds its batches to aiokafka's, byte for byte.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import aiokafka.producer.message_accumulator
import crc32c
from aiokafka.protocol import produce
from aiokafka.protocol.types import Array, Bytes, Schema
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy, _DefaultRecordMetadataPy
from aiokafka.record.util import encode_varint, size_of_varint

# The versions aiokafka may send (it negotiates with the broker; v8 is declared but not used by it).
PRODUCE_REQUEST_STRUCTS: tuple[type[Any], ...] = (
    produce.ProduceRequest_v0, produce.ProduceRequest_v1, produce.ProduceRequest_v2, produce.ProduceRequest_v3,
    produce.ProduceRequest_v4, produce.ProduceRequest_v5, produce.ProduceRequest_v6, produce.ProduceRequest_v7,
    produce.ProduceRequest_v8,
)


def _append(out: bytearray, kind: Any, value: Any) -> None:
    if isinstance(kind, Schema):
        if len(value) != len(kind.fields):
            raise ValueError("Item field count does not match Schema")
        for field, item in zip(kind.fields, value, strict=True):
            _append(out, field, item)
    elif isinstance(kind, Array):
        if value is None:
            out += kind.encode(None)
            return
        out += len(value).to_bytes(4, "big", signed=True)
        for item in value:
            _append(out, kind.array_of, item)
    elif kind is Bytes and value is not None:
        out += len(value).to_bytes(4, "big", signed=True)
        out += value
    else:
        out += kind.encode(value)


def encode_into_one_buffer(struct: Any) -> bytearray:
    """What ``struct.encode()`` returns, built in one buffer. A bytearray, not copied once more into bytes:
    the connection's only use of it is ``header + encoded`` (bytes + bytearray is bytes)."""
    schema: Schema = struct.SCHEMA
    out = bytearray()
    _append(out, schema, [struct.__dict__[name] for name in schema.names])
    return out


_BYTE_LIKE = (bytes, bytearray, memoryview)
_CRC = struct.Struct(">I")
_NONE = b"\x01"  # varint -1: no key, value or header value


def _encoded_varint(value: int) -> bytes:
    out = bytearray()
    encode_varint(value, out.append)
    return bytes(out)


_SMALL_VARINTS = [_encoded_varint(value) for value in range(4096)]
_HEADER_NAMES: dict[str, bytes] = {}


def _varint(value: int) -> bytes:
    """aiokafka's (zigzag) varint, as bytes; the small ones made once."""
    return _SMALL_VARINTS[value] if 0 <= value < 4096 else _encoded_varint(value)


def _checked(offset: int, timestamp: int | None, key: bytes | None, value: bytes | None) -> int:
    """aiokafka's checks of a record's types; its timestamp (now, in ms, when None)."""
    if type(offset) is not int:
        raise TypeError(offset)
    if timestamp is None:
        return int(time.time() * 1000)
    if type(timestamp) is not int:
        raise TypeError(timestamp)
    if not (key is None or type(key) in _BYTE_LIKE):
        raise TypeError(f"Not supported type for key: {type(key)}")
    if not (value is None or type(value) in _BYTE_LIKE):
        raise TypeError(f"Not supported type for value: {type(value)}")
    return timestamp


def _header_name(name: str) -> bytes:
    """A header's name as a record carries it (length, UTF-8); the raw batch headers are a fixed few."""
    encoded = _HEADER_NAMES.get(name)
    if encoded is None:
        raw = name.encode("utf-8")
        encoded = _varint(len(raw)) + raw
        if len(_HEADER_NAMES) < 1024:
            _HEADER_NAMES[name] = encoded
    return encoded


class RecordBatchBuilder(_DefaultRecordBatchBuilderPy):  # type: ignore[misc]  # aiokafka: untyped here
    """aiokafka's record batch (v2) builder, byte for byte; values copied once (at ``build``), the CRC in
    hardware. Records are kept as parts until ``build`` joins them behind the header."""

    _buffer: bytearray
    _first_timestamp: int | None
    _max_timestamp: int | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parts: list[bytes | bytearray] = []
        self._parts_size = 0

    def size(self) -> int:
        return len(self._buffer) + self._parts_size

    def build(self) -> bytearray:
        if self._parts:
            self._buffer = bytearray().join([self._buffer, *self._parts])
            self._parts, self._parts_size = [], 0
        built: bytearray = super().build()
        return built

    def append(
        self,
        offset: int,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]],
    ) -> _DefaultRecordMetadataPy | None:
        timestamp = _checked(offset, timestamp, key, value)
        first_message = self._first_timestamp is None
        if self._first_timestamp is None:
            self._first_timestamp = self._max_timestamp = timestamp
            timestamp_delta = 0
        else:
            timestamp_delta = timestamp - self._first_timestamp
        # The record: attributes, deltas, key and the value's length (head); the value; the headers (tail).
        head = [b"\x00", _varint(timestamp_delta), _varint(offset)]
        if key is None:
            head.append(_NONE)
        else:
            head += (_varint(len(key)), key)
        head.append(_NONE if value is None else _varint(len(value)))
        tail = [_varint(len(headers))]
        for header_key, header_value in headers:
            tail.append(_header_name(header_key))
            if header_value is None:
                tail.append(_NONE)
            else:
                tail += (_varint(len(header_value)), header_value)
        head_bytes, tail_bytes = b"".join(head), b"".join(tail)
        message_len = len(head_bytes) + (0 if value is None else len(value)) + len(tail_bytes)
        required_size = message_len + size_of_varint(message_len)
        if required_size + self.size() > self._batch_size and not first_message:
            return None
        assert self._max_timestamp is not None
        self._max_timestamp = max(self._max_timestamp, timestamp)
        self._num_records += 1
        self._last_offset = offset
        parts = self._parts
        parts.append(_varint(message_len) + head_bytes)
        if value is not None:
            parts.append(value if type(value) is bytes else bytes(value))  # held, so never a buffer that may change
        parts.append(tail_bytes)
        self._parts_size += required_size
        return _DefaultRecordMetadataPy(offset, required_size, timestamp)

    def _write_header(self, use_compression_type: bool = True) -> None:
        # The parent's header, its CRC computed over a view of the buffer instead of a copy of it.
        buffer = self._buffer
        batch_len = len(buffer)
        self.HEADER_STRUCT.pack_into(
            buffer, 0, 0, batch_len - self.AFTER_LEN_OFFSET, self.NO_PARTITION_LEADER_EPOCH, self._magic, 0,
            self._get_attributes(use_compression_type), self._last_offset, self._first_timestamp or 0,
            self._max_timestamp or 0, self._producer_id, self._producer_epoch, self._base_sequence,
            self._num_records,
        )
        with memoryview(buffer) as view:
            _CRC.pack_into(buffer, self.CRC_OFFSET, crc32c.crc32c(view[self.ATTRIBUTES_OFFSET:]))


def install() -> None:
    for struct_class in PRODUCE_REQUEST_STRUCTS:
        struct_class.encode = encode_into_one_buffer
    aiokafka.producer.message_accumulator.DefaultRecordBatchBuilder = RecordBatchBuilder
