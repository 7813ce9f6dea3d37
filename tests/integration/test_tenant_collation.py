"""Tenant ids compare as bytes in every table (1000_tenant_collation.sql): one collation for every tenant_id, so
that joins and lookups between tables compare alike and each table's index on it serves them; and the migration,
run over chains written before it, keeps them verifiable and append-only."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.signer.appender import OffsetEvent, append_batch
from shared.db.migrate import migration_files
from shared.db.pool import connect
from shared.enrollment import record_signing_key
from shared.keys import Ed25519Signer
from shared.verify import published_keys, verify_tenant
from tests.conftest import Infra, _with_database
from tests.integration.signer.test_append import event

MIGRATION = "1000_tenant_collation"


async def _tenant_columns(conn: asyncpg.Connection) -> dict[str, str]:
    """Each table's and index's tenant_id column in the public schema, with its collation."""
    rows = await conn.fetch(
        "SELECT c.relname, coalesce(l.collname, '') AS collation FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_collation l ON l.oid = a.attcollation"
        " WHERE n.nspname = 'public' AND a.attname = 'tenant_id' AND NOT a.attisdropped"
        " AND c.relkind IN ('r', 'p', 'i')"
    )
    return {row["relname"]: row["collation"] for row in rows}


async def test_every_tenant_id_column_and_index_compares_as_bytes(database_url: str) -> None:
    """A table a later migration adds with a tenant_id in the database's collation is caught here."""
    conn = await connect(database_url)
    try:
        columns = await _tenant_columns(conn)
    finally:
        await conn.close()
    assert "audit_logs" in columns and "audit_logs_feed_idx" in columns
    assert {name: collation for name, collation in columns.items() if collation != "C"} == {}


@pytest.fixture
async def before_migration(infra: Infra) -> str:
    """A database migrated up to, not including, the tenant collation migration."""
    name = f"audit_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(infra.server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _with_database(infra.server_dsn, name)
    conn = await connect(dsn)
    try:
        for version, sql in migration_files():
            if version >= MIGRATION:
                break
            await conn.execute(sql)
    finally:
        await conn.close()
    return dsn


async def test_the_migration_keeps_chains_written_before_it_verifiable_and_append_only(
    before_migration: str, signing_key: Ed25519Signer
) -> None:
    conn = await connect(before_migration)
    try:
        await record_signing_key(conn, signing_key.public_key)
        batch = [OffsetEvent(i, event(i, tenant)) for i, tenant in enumerate(["t-b", "T_a", "t-a", "ta"] * 3)]
        await append_batch(conn, signing_key, group="g", topic="canonical", partition=0, batch=batch)
        stored = await conn.fetch("SELECT * FROM audit_logs ORDER BY id")

        await conn.execute(dict(migration_files())[MIGRATION])

        assert set((await _tenant_columns(conn)).values()) == {"C"}
        assert await conn.fetch("SELECT * FROM audit_logs ORDER BY id") == stored
        keys = await published_keys(conn)
        for tenant in ("t-b", "T_a", "t-a", "ta"):
            report = await verify_tenant(conn, tenant, keys)
            assert report.ok and report.rows == 3, report.breaks
        # The rebuilt indexes hold every row: each tenant's chain is found through them, in order.
        await conn.execute("SET enable_seqscan = off")
        seqs = [row["chain_seq"] for row in await conn.fetch(
            "SELECT chain_seq FROM audit_logs WHERE tenant_id = 't-a' ORDER BY chain_seq")]
        assert seqs == [1, 2, 3]
        # The append-only trigger, made again, still names tenant_id.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE audit_logs SET tenant_id = 'other' WHERE chain_seq = 1")
        # And the signer appends after it as before.
        more = [OffsetEvent(12 + i, event(100 + i, "t-a")) for i in range(2)]
        result = await append_batch(conn, signing_key, group="g", topic="canonical", partition=0, batch=more)
        assert result.appended == 2
        report = await verify_tenant(conn, "t-a", await published_keys(conn))
        assert report.ok and report.rows == 5, report.breaks
    finally:
        await conn.close()
