"""Connection helpers: JSON codecs registered once so JSONB columns round-trip as Python objects."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import orjson

from shared import exactjson

_JSONB_VERSION = b"\x01"


def _encode_jsonb(value: Any) -> bytes:
    try:
        return _JSONB_VERSION + orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits, which orjson refuses and JSONB stores exactly
        return _JSONB_VERSION + json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _decode_jsonb(data: bytes) -> Any:
    # Exact integers of any size: the verifier must see the values that were signed.
    return exactjson.loads(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary format, because COPY (the signer's bulk append) only speaks binary.
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init_connection)
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn
