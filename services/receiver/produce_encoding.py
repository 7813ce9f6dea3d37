"""Produce requests encoded into one buffer, byte for byte as aiokafka encodes them.

aiokafka encodes a request field by field, each level joining its children's bytes into new bytes: the
record batches of a produce request (every request's body, a megabyte per partition at most) are copied
once per level, six times before the connection adds its own two. The receiver produces every byte it
accepts, so those copies were a visible share of its CPU. ``encode_into_one_buffer`` walks the same schema
(aiokafka's own type objects, so every field is encoded exactly as before) and appends each field to one
bytearray: the record batches are copied once. ``install`` puts it in place of ``encode`` on aiokafka's
produce request structs, in this process only; tests/unit/receiver/test_produce_encoding.py holds it to
aiokafka's own output for every version.
"""

from __future__ import annotations

from typing import Any

from aiokafka.protocol import produce
from aiokafka.protocol.types import Array, Bytes, Schema

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


def install() -> None:
    for struct_class in PRODUCE_REQUEST_STRUCTS:
        struct_class.encode = encode_into_one_buffer
