"""A database of a benchmark run's own on the server of DATABASE_URL, so that runs side by side never share rows."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from shared.db.pool import connect


async def create_or_drop_database(server_dsn: str, name: str, *, create: bool) -> str:
    """Create (or drop) the database ``name`` on the server of ``server_dsn``; the DSN that reaches it."""
    conn = await connect(server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"' if create else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(server_dsn)._replace(path="/" + name))
