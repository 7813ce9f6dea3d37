"""Connection helpers: JSON codecs registered once so JSONB columns round-trip as Python objects; for bulk
writers (the signer), timestamptz encoded from integers as well."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import asyncpg
import orjson

from shared import exactjson

_JSONB_VERSION = b"\x01"
# The empty object is the most common value of the signer's JSONB columns (no content, no redactions): its
# encoding is made once.
_EMPTY_OBJECT = _JSONB_VERSION + b"{}"


def _encode_jsonb(value: Any) -> bytes:
    if not value and type(value) is dict:
        return _EMPTY_OBJECT
    try:
        return _JSONB_VERSION + orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits, which orjson refuses and JSONB stores exactly
        return _JSONB_VERSION + json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _decode_jsonb(data: bytes) -> Any:
    # Exact integers of any size: the verifier must see the values that were signed.
    return exactjson.loads(data[1:])


# timestamptz as asyncpg's own codec writes and reads it (microseconds since 2000-01-01 UTC, with PostgreSQL's
# infinities for the largest and smallest datetimes), from integers asyncpg encodes in C ("tuple" format).
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_PG_INFINITY, _PG_NEGATIVE_INFINITY = 2**63 - 1, -(2**63)
_MAX_MICROSECONDS = (datetime.max.replace(tzinfo=UTC) - _PG_EPOCH) // _MICROSECOND
_MIN_MICROSECONDS = (datetime.min.replace(tzinfo=UTC) - _PG_EPOCH) // _MICROSECOND


def _encode_timestamptz(value: Any) -> tuple[int]:
    if type(value) is not datetime or value.tzinfo is not UTC:
        value = _in_utc(value)
        if type(value) is int:
            return (value,)
    microseconds: int = (value - _PG_EPOCH) // _MICROSECOND
    if microseconds == _MAX_MICROSECONDS:
        return (_PG_INFINITY,)
    if microseconds == _MIN_MICROSECONDS:
        return (_PG_NEGATIVE_INFINITY,)
    return (microseconds,)


def _in_utc(value: Any) -> Any:
    """What asyncpg's codec makes of anything but a datetime in UTC: a date is midnight at the current local
    offset, a naive datetime local time, except the largest and smallest, which are PostgreSQL's infinities
    (returned as such); then the instant in UTC."""
    if not isinstance(value, datetime):
        if not isinstance(value, date):
            raise TypeError(f"expected a datetime.date or datetime.datetime instance, got {type(value).__name__!r}")
        offset = datetime.now(UTC).astimezone().utcoffset()
        assert offset is not None
        value = datetime(value.year, value.month, value.day, tzinfo=timezone(offset))
    elif value == datetime.max:  # only a naive datetime equals a naive one
        return _PG_INFINITY
    elif value == datetime.min:
        return _PG_NEGATIVE_INFINITY
    return value.astimezone(UTC)


def _decode_timestamptz(value: tuple[int]) -> datetime:
    (microseconds,) = value
    if microseconds == _PG_INFINITY:
        return datetime.max
    if microseconds == _PG_NEGATIVE_INFINITY:
        return datetime.min
    return _PG_EPOCH + timedelta(microseconds=microseconds)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary format, because COPY (the signer's bulk append) only speaks binary.
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _init_bulk_writer(conn: asyncpg.Connection) -> None:
    await _init_connection(conn)
    # asyncpg's own timestamptz encoder compares, converts and subtracts datetimes per value (about 0.35 us
    # each in the signer's COPY); from an integer it is a plain write. Reading goes through Python instead of
    # C, slower: only for connections that write many rows and read few.
    await conn.set_type_codec(
        "timestamptz", encoder=_encode_timestamptz, decoder=_decode_timestamptz, schema="pg_catalog", format="tuple"
    )


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 4, bulk_writer: bool = False) -> asyncpg.Pool:
    """``bulk_writer``: timestamps encoded from integers (the signer's COPY), the same values written and read."""
    init = _init_bulk_writer if bulk_writer else _init_connection
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=init)
    assert pool is not None
    return pool


async def connect(dsn: str, *, bulk_writer: bool = False) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await (_init_bulk_writer if bulk_writer else _init_connection)(conn)
    return conn
