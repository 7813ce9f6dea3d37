"""The reporter's connection pool: JSON columns decoded, every statement under a timeout."""

from __future__ import annotations

import json

import asyncpg


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Text format is enough here: the reporter never COPYs, it only reads JSON columns back.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_reporting_pool(dsn: str, *, size: int, statement_timeout_ms: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        init=_init_connection,
        # A slow report must fail rather than hold a connection the next request needs.
        server_settings={"statement_timeout": str(statement_timeout_ms), "application_name": "audit-reporter"},
    )
    assert pool is not None
    return pool
