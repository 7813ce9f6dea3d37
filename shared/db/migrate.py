"""Forward-only SQL migrations, applied in file-name order under an advisory lock, then the privileges."""

from __future__ import annotations

from importlib import resources

import asyncpg

# Any constant works; it only has to be the same for every process that migrates this database.
_MIGRATION_LOCK = 0x61756469


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("shared.db") / "migrations"
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text()) for name in names]


def privileges_sql() -> str:
    """The component roles and their privileges (shared/db/privileges.sql), re-applied after every run."""
    return (resources.files("shared.db") / "privileges.sql").read_text()


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply what is missing, then the privileges; returns the versions applied now."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied_now.append(version)
        # Every run, not only when a migration was applied: privileges.sql may have changed on its own,
        # and the roles are cluster-wide, so a restored database on a new server needs them created.
        async with conn.transaction():
            await conn.execute(privileges_sql())
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now
