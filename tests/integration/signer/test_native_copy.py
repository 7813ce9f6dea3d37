"""The compiled COPY encoding (``services/signer/_native_copy.c``, ``appender.copy_records``) against asyncpg's
``copy_records_to_table`` through the signer's connection (``bulk_writer``): generated batches of every
column type the signer writes, NULLs, unicode, integers at their bounds, Decimals of many digits and
exponents, whole-second and fractional timestamps, empty and nested JSON, COPYed both ways into two tables of
the same column types, must be stored the same, value for value (as PostgreSQL's binary send format of each
column). Values the encoder leaves to asyncpg (integers beyond 64 bits in JSON, timestamps outside UTC or at
datetime.max, special Decimals) must send the whole table through asyncpg, never a guess.

A checkout where the compiled module was not built skips the comparisons; where it must be built:
tests/unit/signer/test_native_built."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.signer import appender
from services.signer.appender import (
    CONTENT_COLUMNS,
    COPY_COLUMN_TYPES,
    INSERT_COLUMNS,
    SUBTREE_COLUMNS,
    _copy_kinds,
    copy_records,
)
from shared.db.pool import connect

TABLES = {"audit_logs": INSERT_COLUMNS, "audit_content": CONTENT_COLUMNS, "merkle_subtrees": SUBTREE_COLUMNS}
# format_type() of each type, as COPY_COLUMN_TYPES names them.
_SCHEMA_NAMES = {"timestamp with time zone": "timestamptz", "numeric(20,6)": "numeric"}
# Each type's binary send function: stored values are compared in the bytes a binary client would read.
_SEND = {
    "text": "textsend", "bigint": "int8send", "integer": "int4send", "smallint": "int2send", "boolean": "boolsend",
    "timestamptz": "timestamptz_send", "numeric": "numeric_send", "jsonb": "jsonb_send", "bytea": "byteasend",
}

compiled = pytest.mark.skipif(appender._encode_copy is None, reason="services.signer._native_copy is not built"
                              " (or the pure-Python path is meant)")


async def test_the_declared_column_types_are_the_schema_s(database_url: str) -> None:
    conn = await connect(database_url)
    try:
        for table, columns in TABLES.items():
            rows = await conn.fetch(
                "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
                " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped", table)
            schema = {row["attname"]: _SCHEMA_NAMES.get(row["type"], row["type"]) for row in rows}
            assert {column: COPY_COLUMN_TYPES[column] for column in columns} == {c: schema[c] for c in columns}
    finally:
        await conn.close()


def _within_64_bits(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | list | dict):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    items = value.values() if isinstance(value, dict) else value
    return all(_within_64_bits(item) for item in items)


_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | _TEXT
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
# numeric(20,6) holds 14 integer digits; more fractional digits than 6 are rounded by the column, on both paths.
_DECIMALS = st.one_of(
    st.decimals(min_value=-(10**13), max_value=10**13, allow_nan=False, allow_infinity=False),
    st.builds(lambda sign, digits, exponent: Decimal((sign, tuple(digits), exponent)),
              st.integers(0, 1), st.lists(st.integers(0, 9), min_size=1, max_size=40), st.integers(-45, 13))
    .filter(lambda d: abs(d) < 10**13),
    st.sampled_from([Decimal(0), Decimal("-0"), Decimal("0E-20"), Decimal("0E+5"), Decimal("1E+13"),
                     Decimal("-0.0000005"), Decimal("0.0000005"), Decimal("9999.99995"), Decimal("0.006850")]),
)
_INSTANTS = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999998),
                 timezones=st.just(UTC)),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
    .map(lambda t: t.replace(microsecond=0)),
)
_EXACT_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "text": _TEXT,
    "bigint": st.integers(-(2**63), 2**63 - 1),
    "integer": st.integers(-(2**31), 2**31 - 1),
    "smallint": st.integers(-(2**15), 2**15 - 1),
    "boolean": st.booleans(),
    "timestamptz": _INSTANTS,
    "numeric": _DECIMALS,
    "jsonb": _JSON.filter(_within_64_bits),
    "bytea": st.binary(max_size=40),
}
# What the encoder leaves to asyncpg: the table then goes through copy_records_to_table.
_OTHER_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "timestamptz": st.sampled_from([datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC),
                                    datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
                                    datetime(2026, 1, 1, 12)]),
    "numeric": st.sampled_from([Decimal("NaN"), 5, Decimal("1E-20000")]),
    "jsonb": st.sampled_from([{"big": 2**64}, [-(2**63) - 1], {1: "x"}]),
    "bigint": st.sampled_from([True, 2**63]),
    "integer": st.sampled_from([2**31, False]),
    "smallint": st.sampled_from([2**15, -(2**15) - 1]),
    "text": st.sampled_from(["\udcff"]),
    "bytea": st.sampled_from([bytearray(b"x"), memoryview(b"y")]),
    "boolean": st.sampled_from([1]),
}


def _records(columns: Sequence[str], values: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[list[Any]]:
    return st.lists(
        st.tuples(*(st.none() | values[COPY_COLUMN_TYPES[column]] for column in columns)).map(list),
        min_size=1, max_size=8,
    )


@pytest.fixture
async def bulk(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The signer's kind of connection, with two tables of each COPYed table's column types (no constraints:
    NULLs go anywhere)."""
    conn = await connect(database_url, bulk_writer=True)
    try:
        for table, columns in TABLES.items():
            types = {row["attname"]: row["type"] for row in await conn.fetch(
                "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
                " WHERE attrelid = $1::regclass AND attnum > 0", table)}
            definition = ", ".join(f"{column} {types[column]}" for column in columns)
            await conn.execute(f"CREATE TABLE compiled_{table} ({definition}); CREATE TABLE asyncpg_{table} ({definition})")
        yield conn
    finally:
        await conn.close()


async def _stored(conn: asyncpg.Connection, table: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """Each row's values in their types' binary send format (NULL as None), in COPY order."""
    sends = ", ".join(f"{_SEND[COPY_COLUMN_TYPES[column]]}({column})" for column in columns)
    return [tuple(row) for row in await conn.fetch(f"SELECT {sends} FROM {table} ORDER BY ctid")]


async def _both_ways(conn: asyncpg.Connection, table: str, records: list[list[Any]]) -> None:
    columns = TABLES[table]
    await conn.execute(f"TRUNCATE compiled_{table}, asyncpg_{table}")
    outcomes: list[Any] = []
    for copy in (lambda: copy_records(conn, f"compiled_{table}", records, columns),
                 lambda: conn.copy_records_to_table(f"asyncpg_{table}", records=records, columns=list(columns))):
        try:
            await copy()
            outcomes.append(None)
        except (asyncpg.PostgresError, OverflowError, TypeError, ValueError, UnicodeError) as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes[0] == outcomes[1]
    assert await _stored(conn, f"compiled_{table}", columns) == await _stored(conn, f"asyncpg_{table}", columns)


_SETTINGS = settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@compiled
@_SETTINGS
@given(data=st.data())
async def test_exact_values_are_encoded_in_c_and_stored_as_asyncpg_stores_them(
    bulk: asyncpg.Connection, data: st.DataObject
) -> None:
    for table, columns in TABLES.items():
        records = data.draw(_records(columns, _EXACT_VALUES))
        assert appender._encode_copy is not None
        assert appender._encode_copy(_copy_kinds(columns), records) is not None
        await _both_ways(bulk, table, records)


@compiled
@_SETTINGS
@given(data=st.data())
async def test_a_value_the_encoder_leaves_to_asyncpg_sends_the_whole_table_through_it(
    bulk: asyncpg.Connection, data: st.DataObject
) -> None:
    columns = INSERT_COLUMNS
    records = data.draw(_records(columns, _EXACT_VALUES))
    column = data.draw(st.sampled_from(columns))
    row = data.draw(st.integers(0, len(records) - 1))
    records[row][columns.index(column)] = data.draw(_OTHER_VALUES[COPY_COLUMN_TYPES[column]])
    assert appender._encode_copy is not None
    assert appender._encode_copy(_copy_kinds(columns), records) is None
    await _both_ways(bulk, "audit_logs", records)


@compiled
def test_records_of_the_wrong_length_are_left_to_asyncpg() -> None:
    assert appender._encode_copy is not None
    kinds = _copy_kinds(SUBTREE_COLUMNS)
    assert appender._encode_copy(kinds, [("t", 1)]) is None
    assert appender._encode_copy(kinds, [("t", 1, b"", None)]) is None
    assert appender._encode_copy(kinds, []) is not None
