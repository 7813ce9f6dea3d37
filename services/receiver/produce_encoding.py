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

Copied once was still copied three times more: the batch joined behind its header, the batch into the
request's buffer, and the connection's own two (``header + request``, then ``size + message``). So large
values are not copied at all: a batch is ``Segments``, its header and small records in one buffer and each
large value as the very bytes the producer was given; the request keeps them as they are, and the
connection (``send``, aiokafka's own but for its write) hands them to the transport in one vectored write
(``writelines``: one ``writev`` with uvloop). The bytes on the wire are the same.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Awaitable
from typing import Any

import aiokafka.producer.message_accumulator
import crc32c
from aiokafka import errors
from aiokafka.conn import AIOKafkaConnection, CloseReason
from aiokafka.protocol import produce
from aiokafka.protocol.types import Array, Bytes, Schema
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy, _DefaultRecordMetadataPy
from aiokafka.record.util import encode_varint, size_of_varint
from aiokafka.util import wait_for

# The versions aiokafka may send (it negotiates with the broker; v8 is declared but not used by it).
PRODUCE_REQUEST_STRUCTS: tuple[type[Any], ...] = (
    produce.ProduceRequest_v0, produce.ProduceRequest_v1, produce.ProduceRequest_v2, produce.ProduceRequest_v3,
    produce.ProduceRequest_v4, produce.ProduceRequest_v5, produce.ProduceRequest_v6, produce.ProduceRequest_v7,
    produce.ProduceRequest_v8,
)


# Values from this size on are held as they are (a buffer of their own in a vectored write); smaller ones
# are copied next to their neighbours, where a buffer of their own would cost more than the copy.
SEPARATE_FROM = 2048


class Segments:
    """Bytes held as the buffers they are made of, in order, for a vectored write; never changed once made.

    ``bytes + segments`` (how the connection puts the request header, then the size, in front) is a new
    ``Segments``; ``bytes(segments)`` joins them."""

    __slots__ = ("buffers", "size")

    def __init__(self, buffers: list[bytes | bytearray], size: int) -> None:
        self.buffers = buffers
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __radd__(self, prefix: bytes) -> Segments:
        return Segments([prefix, *self.buffers], len(prefix) + self.size)

    def __bytes__(self) -> bytes:
        return b"".join(self.buffers)


class _Rope:
    """The buffers of an encoding under way: fields are appended to ``tail``; ``Segments`` are kept whole."""

    __slots__ = ("buffers", "tail")

    def __init__(self) -> None:
        self.tail = bytearray()
        self.buffers: list[bytes | bytearray] = [self.tail]

    def keep(self, segments: Segments) -> None:
        self.buffers += segments.buffers
        self.tail = bytearray()
        self.buffers.append(self.tail)


def _append(out: _Rope, kind: Any, value: Any) -> None:
    if isinstance(kind, Schema):
        if len(value) != len(kind.fields):
            raise ValueError("Item field count does not match Schema")
        for field, item in zip(kind.fields, value, strict=True):
            _append(out, field, item)
    elif isinstance(kind, Array):
        if value is None:
            out.tail += kind.encode(None)
            return
        out.tail += len(value).to_bytes(4, "big", signed=True)
        for item in value:
            _append(out, kind.array_of, item)
    elif kind is Bytes and value is not None:
        out.tail += len(value).to_bytes(4, "big", signed=True)
        if type(value) is Segments:
            out.keep(value)
        else:
            out.tail += value
    else:
        out.tail += kind.encode(value)


def encode_into_one_buffer(struct: Any) -> bytearray | Segments:
    """What ``struct.encode()`` returns: built in one buffer (a bytearray, not copied once more into bytes:
    the connection's only use of it is ``header + encoded``), or, when it holds ``Segments`` (the record
    batches ``RecordBatchBuilder`` builds), as ``Segments`` around them."""
    schema: Schema = struct.SCHEMA
    out = _Rope()
    _append(out, schema, [struct.__dict__[name] for name in schema.names])
    if len(out.buffers) == 1:
        return out.tail
    buffers = [buffer for buffer in out.buffers if buffer]
    return Segments(buffers, sum(map(len, buffers)))


def send(self: AIOKafkaConnection, request: Any, expect_response: bool = True) -> Awaitable[Any]:
    """aiokafka 0.14.0's ``AIOKafkaConnection.send``, but for its write: ``Segments`` in one vectored write."""
    if self._writer is None:
        raise errors.KafkaConnectionError(f"No connection to broker at {self._host}:{self._port}")
    request_struct = request.prepare(self._versions)
    correlation_id = self._next_correlation_id()
    header = request_struct.build_request_header(correlation_id=correlation_id, client_id=self._client_id)
    message = header.encode() + request_struct.encode()
    size = struct.pack(">i", len(message))
    try:
        data = size + message
        if type(data) is Segments:
            self._writer.writelines(data.buffers)
        else:
            self._writer.write(data)
    except OSError as err:
        self.close(reason=CloseReason.CONNECTION_BROKEN)
        raise errors.KafkaConnectionError(f"Connection at {self._host}:{self._port} broken: {err}") from err
    _aiokafka_log.debug("Request to %s:%d %d: %s", self._host, self._port, correlation_id, request_struct)
    if not expect_response:
        drained: Awaitable[Any] = self._writer.drain()
        return drained
    future = self._loop.create_future()
    self._requests.append((correlation_id, request_struct, future))
    response: Awaitable[Any] = wait_for(future, self._request_timeout)
    return response


_aiokafka_log = logging.getLogger("aiokafka.conn")
log = logging.getLogger("receiver")
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
    """aiokafka's record batch (v2) builder, byte for byte; values never copied from ``SEPARATE_FROM`` bytes on
    (smaller ones once), the CRC in hardware. ``build`` gives the batch as ``Segments``: the header and small
    records in one buffer, each large value in its own (compressed batches, which this producer does not
    send, are joined and built by aiokafka's code, as before)."""

    _buffer: bytearray
    _first_timestamp: int | None
    _max_timestamp: int | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # After the header (in ``_buffer``, where small records go too until the first large value): the
        # large values, each followed by the buffer the records' small parts after it go to.
        self._parts: list[bytes | bytearray] = []
        self._open = self._buffer
        self._size = len(self._buffer)

    def size(self) -> int:
        return self._size

    def build(self) -> Any:
        if self._compression_type != self.CODEC_NONE:
            if self._parts:
                self._buffer = bytearray().join([self._buffer, *self._parts])
                self._parts = []
            return super().build()
        self._write_header(False)
        return Segments([self._buffer, *self._parts], self._size)

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
        if required_size + self._size > self._batch_size and not first_message:
            return None
        assert self._max_timestamp is not None
        self._max_timestamp = max(self._max_timestamp, timestamp)
        self._num_records += 1
        self._last_offset = offset
        self._open += _varint(message_len)
        self._open += head_bytes
        if value is not None:
            if len(value) < SEPARATE_FROM:
                self._open += value
            else:  # held, so never a buffer that may change
                self._parts.append(value if type(value) is bytes else bytes(value))
                self._open = bytearray()
                self._parts.append(self._open)
        self._open += tail_bytes
        self._size += required_size
        return _DefaultRecordMetadataPy(offset, required_size, timestamp)

    def _write_header(self, use_compression_type: bool = True) -> None:
        # The parent's header, for a batch that may go on past ``_buffer``; its CRC computed over views of
        # the buffers instead of a joined copy.
        buffer = self._buffer
        batch_len = len(buffer) + sum(map(len, self._parts))  # compressed: the buffer alone, parts joined
        self.HEADER_STRUCT.pack_into(
            buffer, 0, 0, batch_len - self.AFTER_LEN_OFFSET, self.NO_PARTITION_LEADER_EPOCH, self._magic, 0,
            self._get_attributes(use_compression_type), self._last_offset, self._first_timestamp or 0,
            self._max_timestamp or 0, self._producer_id, self._producer_epoch, self._base_sequence,
            self._num_records,
        )
        with memoryview(buffer) as view:
            crc = crc32c.crc32c(view[self.ATTRIBUTES_OFFSET:])
        for part in self._parts:
            crc = crc32c.crc32c(part, crc)
        _CRC.pack_into(buffer, self.CRC_OFFSET, crc)


# ``send`` is a copy of this version's connection method and the encoders follow its schema: another version keeps
# aiokafka's own (slower, always right) code rather than a copy that may no longer match it.
_WRITTEN_FOR_AIOKAFKA = "0.14.0"


def install() -> None:
    if aiokafka.__version__ != _WRITTEN_FOR_AIOKAFKA:
        log.warning("aiokafka's own produce encoding kept",
                    extra={"aiokafka": aiokafka.__version__, "written_for": _WRITTEN_FOR_AIOKAFKA})
        return
    AIOKafkaConnection.send = send
    for struct_class in PRODUCE_REQUEST_STRUCTS:
        struct_class.encode = encode_into_one_buffer
    aiokafka.producer.message_accumulator.DefaultRecordBatchBuilder = RecordBatchBuilder
