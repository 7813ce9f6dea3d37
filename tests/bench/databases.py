"""The database of a benchmark run: its own on the server of DATABASE_URL, so that runs side by side never share
rows, or else a throwaway local server."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from deploy.local.infra import Postgres, start_postgres
from shared.db.pool import connect


async def create_or_drop_database(server_dsn: str, name: str, *, create: bool) -> str:
    """Create (or drop) the database ``name`` on the server of ``server_dsn``; the DSN that reaches it."""
    conn = await connect(server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"' if create else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(server_dsn)._replace(path="/" + name))


@dataclass(frozen=True)
class BenchDatabase:
    """A run's database: ``open`` it before the run, ``close`` it after (dropped, or its server stopped)."""

    dsn: str
    server_dsn: str | None
    name: str
    postgres: Postgres | None

    @classmethod
    async def open(cls, prefix: str, work: Path) -> BenchDatabase:
        """A new database named ``prefix`` and a random suffix on DATABASE_URL's server, else a server in ``work``."""
        server_dsn = os.environ.get("DATABASE_URL")
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        if server_dsn:
            return cls(await create_or_drop_database(server_dsn, name, create=True), server_dsn, name, None)
        postgres = start_postgres(work / "pgdata", ephemeral=True)
        return cls(postgres.dsn, None, name, postgres)

    async def close(self) -> None:
        if self.postgres is not None:
            self.postgres.stop()
        if self.server_dsn:
            await create_or_drop_database(self.server_dsn, self.name, create=False)
