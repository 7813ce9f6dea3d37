"""The signer's connections (``bulk_writer``) encode timestamptz from integers: PostgreSQL must store exactly
what asyncpg's own codec stores, by parameter and by COPY, and both must read back the same values; what
asyncpg's codec refuses, this one refuses too."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.db.pool import connect

OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=9, minutes=30)),
                           timezone(timedelta(seconds=37))])
AWARE = st.builds(lambda t, tz: t.replace(tzinfo=tz), st.datetimes(min_value=datetime(1, 1, 2),
                                                                   max_value=datetime(9999, 12, 30)), OFFSETS)
EDGES: list[Any] = [
    datetime(2000, 1, 1, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 11, 28, 12, 0, tzinfo=UTC), datetime(2026, 11, 28, 12, 0, 0, 1, tzinfo=UTC),
    datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC),  # stored as the infinities
    datetime.max, datetime.min,  # naive: the infinities too
    datetime(2026, 6, 1, 12, 30), date(2026, 3, 29), date(2000, 1, 1),  # local time
    datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),  # before year 1 in UTC: refused
    datetime(9999, 12, 31, 23, 0, tzinfo=timezone(-timedelta(hours=2))),  # after 9999 in UTC: refused
]


async def stored(conn: asyncpg.Connection, values: list[Any]) -> list[Any]:
    """What PostgreSQL holds for each value, as text, by parameter and by COPY; or the error's type."""
    out: list[Any] = []
    copyable = []
    for i, value in enumerate(values):
        try:
            out.append(await conn.fetchval("SELECT $1::timestamptz::text", value))
            copyable.append((i, value))
        except (asyncpg.DataError, OverflowError, TypeError) as exc:
            out.append(type(exc).__name__)
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS times (i int, t timestamptz); TRUNCATE times")
    await conn.copy_records_to_table("times", records=copyable)
    out.append(await conn.fetch("SELECT i, t::text FROM times ORDER BY i"))
    out.append(await conn.fetchval("SELECT $1::timestamptz[]::text", [v for _, v in copyable]))
    return out


async def read_back(conn: asyncpg.Connection) -> list[Any]:
    return [tuple(row) for row in await conn.fetch("SELECT i, t FROM times ORDER BY i")] + [
        await conn.fetchval("SELECT array_agg(t ORDER BY i) FROM times")]


async def compare(database_url: str, values: list[Any]) -> None:
    own, bulk = await connect(database_url), await connect(database_url, bulk_writer=True)
    try:
        expected, got = await stored(own, values), await stored(bulk, values)
        assert got == expected
        assert await read_back(bulk) == await read_back(own)
    finally:
        await own.close()
        await bulk.close()


async def test_edges_are_stored_and_read_as_asyncpg_does(database_url: str) -> None:
    await compare(database_url, EDGES)


async def test_what_is_not_a_date_is_refused(database_url: str) -> None:
    bulk = await connect(database_url, bulk_writer=True)
    try:
        with pytest.raises(asyncpg.DataError):
            await bulk.fetchval("SELECT $1::timestamptz", "2026-01-01")
    finally:
        await bulk.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(values=st.lists(AWARE, min_size=1, max_size=40))
async def test_random_instants_are_stored_as_asyncpg_stores_them(database_url: str, values: list[datetime]) -> None:
    await compare(database_url, values)
