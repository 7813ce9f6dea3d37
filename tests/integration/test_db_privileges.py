"""Least privilege in PostgreSQL (shared/db/privileges.sql): each component's role may write exactly what
its code writes, audit_logs and chain_checkpoints are append-only for everyone, and no table is forgotten."""

from __future__ import annotations

import asyncio
import uuid
from importlib import resources

import asyncpg
import pytest

from shared.db.migrate import apply_migrations
from shared.db.pool import connect
from shared.db.roles import COMPONENT_ROLES, ROLE_BY_COMPONENT, dsn_for_role
from tests.conftest import Infra, create_database

APPEND_ONLY = ("audit_logs", "chain_checkpoints")
WRITES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")

# What each role may write, the specification the test holds privileges.sql to (reads are checked apart).
# Every other (role, table, write) must be refused by PostgreSQL.
ALLOWED_WRITES: dict[str, dict[str, set[str]]] = {
    "audit_receiver": {},
    "audit_redactor": {},
    "audit_signer": {
        "audit_logs": {"INSERT"},
        "chain_checkpoints": {"INSERT"},
        "chain_heads": {"INSERT", "UPDATE"},
        "signer_offsets": {"INSERT", "UPDATE"},
        "key_activations": {"INSERT"},
        "merkle_subtrees": {"INSERT"},
        "checkpoint_witness_cursor": {"INSERT", "UPDATE"},
        "audit_content": {"INSERT"},
    },
    "audit_reporter": {
        table: {"INSERT", "UPDATE"}
        for table in ("report_fold_progress", "report_sessions", "report_usage_daily", "report_users",
                      "report_usage_cumulative", "report_model_daily", "report_chain_status",
                      "reporting_tokens", "portal_sessions")
    },
    "audit_usage": {
        "usage_series": {"INSERT", "UPDATE"},
        "usage_points": {"INSERT"},
        "usage_metric_model_daily": {"INSERT", "UPDATE"},
        "usage_metric_cumulative": {"INSERT", "UPDATE"},
        "report_usage_daily": {"INSERT", "UPDATE"},
        "report_users": {"INSERT", "UPDATE"},
    },
    "audit_admin": {
        "licenses": {"INSERT", "UPDATE"},
        "detection_postures": {"INSERT", "UPDATE"},
        "signing_keys": {"INSERT", "UPDATE"},
        "reporting_tokens": {"INSERT", "UPDATE"},
        "portal_sessions": {"UPDATE"},
        # auditctl erase: content of hash version 2 rows is the one thing any role may delete.
        "audit_content": {"DELETE"},
        "content_erasures": {"INSERT"},
    },
}

# Reads that matter for the components to work at all (the rest follows from privileges.sql).
REQUIRED_READS: dict[str, tuple[str, ...]] = {
    "audit_receiver": ("licenses",),
    "audit_redactor": ("detection_postures",),
    "audit_signer": ("audit_logs", "chain_heads", "signer_offsets", "signing_keys", "key_activations"),
    "audit_reporter": ("audit_logs", "chain_heads", "chain_checkpoints", "signing_keys", "licenses",
                       "report_sessions", "usage_metric_cumulative", "audit_content", "content_erasures"),
    "audit_usage": ("usage_series", "usage_points"),
    "audit_admin": ("audit_logs", "chain_heads", "chain_checkpoints", "signing_keys", "key_activations",
                    "licenses", "detection_postures"),
}

# Tables no component may read.
FORBIDDEN_READS: dict[str, tuple[str, ...]] = {
    "audit_receiver": ("audit_logs", "detection_postures", "signing_keys"),
    "audit_redactor": ("audit_logs", "licenses"),
    "audit_usage": ("audit_logs", "licenses"),
    "audit_reporter": ("signer_offsets",),
}


async def _tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1"
    )
    return [row["relname"] for row in rows]


async def _first_column(conn: asyncpg.Connection, table: str) -> str:
    name: str = await conn.fetchval(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped"
        " AND attidentity = '' AND attgenerated = '' ORDER BY attnum LIMIT 1",
        f"public.{table}",
    )
    return name


def _statement(op: str, table: str, column: str) -> str:
    return {
        "INSERT": f'INSERT INTO "{table}" DEFAULT VALUES',
        "UPDATE": f'UPDATE "{table}" SET "{column}" = "{column}" WHERE false',
        "DELETE": f'DELETE FROM "{table}" WHERE false',
        "TRUNCATE": f'TRUNCATE "{table}"',
        "SELECT": f'SELECT 1 FROM "{table}" LIMIT 1',
    }[op]


@pytest.fixture
async def owner(database_url: str) -> asyncpg.Connection:
    """The database owner with triggers on (unlike the ``db`` fixture, which tampers like a superuser)."""
    conn = await connect(database_url)
    yield conn
    await conn.close()


async def test_every_table_has_a_privilege_entry_for_some_component_role(owner: asyncpg.Connection) -> None:
    """A table a migration adds without a line in privileges.sql is unusable by every component: caught here."""
    forgotten = await owner.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT EXISTS ("
        "   SELECT 1 FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a"
        "   JOIN pg_roles r ON r.oid = a.grantee WHERE r.rolname = ANY($1::text[]))",
        list(COMPONENT_ROLES),
    )
    assert [row["relname"] for row in forgotten] == []
    # ...and the check means something only while nothing is granted on all tables wholesale.
    text = (resources.files("shared.db") / "privileges.sql").read_text().upper()
    assert "GRANT" in text and " ON ALL TABLES" not in text.replace("REVOKE ALL ON ALL TABLES", "")


async def test_the_component_roles_are_the_ones_privileges_sql_creates(owner: asyncpg.Connection) -> None:
    names = await owner.fetch("SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin FROM pg_roles"
                              " WHERE rolname = ANY($1::text[])", list(COMPONENT_ROLES))
    assert sorted(row["rolname"] for row in names) == sorted(COMPONENT_ROLES)
    assert all(row["rolcanlogin"] and not (row["rolsuper"] or row["rolcreaterole"] or row["rolcreatedb"])
               for row in names)
    assert set(ALLOWED_WRITES) == set(COMPONENT_ROLES) == set(ROLE_BY_COMPONENT.values())


async def test_every_forbidden_write_fails_and_every_needed_one_is_granted(owner: asyncpg.Connection) -> None:
    """The whole matrix: each role x each table x each write, tried for real under SET ROLE."""
    tables = await _tables(owner)
    refused: list[str] = []
    for role in COMPONENT_ROLES:
        for table in tables:
            column = await _first_column(owner, table)
            for op in WRITES:
                allowed = op in ALLOWED_WRITES[role].get(table, set())
                granted = await owner.fetchval("SELECT has_table_privilege($1, $2, $3)", role, f"public.{table}", op)
                assert granted == allowed, f"{role} {op} {table}: granted={granted}, specified={allowed}"
                if allowed:
                    continue
                tx = owner.transaction()
                await tx.start()
                try:
                    await owner.execute(f'SET LOCAL ROLE "{role}"')
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await owner.execute(_statement(op, table, column))
                    refused.append(f"{role} {op} {table}")
                finally:
                    await tx.rollback()
    # Sanity: the matrix really ran (six roles, every table, four writes, minus the few allowed ones).
    assert len(refused) > len(COMPONENT_ROLES) * len(tables) * 3


async def test_reads_each_component_needs_and_reads_it_must_not_have(owner: asyncpg.Connection) -> None:
    for role, tables in REQUIRED_READS.items():
        for table in tables:
            assert await owner.fetchval("SELECT has_table_privilege($1, $2, 'SELECT')", role, table), (role, table)
    for role, tables in FORBIDDEN_READS.items():
        for table in tables:
            tx = owner.transaction()
            await tx.start()
            try:
                await owner.execute(f'SET LOCAL ROLE "{role}"')
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await owner.execute(_statement("SELECT", table, ""))
            finally:
                await tx.rollback()


@pytest.mark.parametrize("role", COMPONENT_ROLES)
async def test_signed_rows_and_checkpoints_are_append_only_for_every_role(database_url: str, role: str) -> None:
    """Logged in as the role itself, the way the services connect."""
    conn = await asyncpg.connect(dsn_for_role(database_url, role))
    try:
        assert await conn.fetchval("SELECT current_user") == role
        for table in APPEND_ONLY:
            for statement in (f"DELETE FROM {table} WHERE tenant_id = 'x'",
                              f"UPDATE {table} SET tenant_id = tenant_id WHERE false",
                              f"TRUNCATE {table}"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await conn.execute("DELETE FROM audit_logs WHERE id = -1")
    finally:
        await conn.close()


async def test_the_trigger_refuses_changes_even_to_the_owner(owner: asyncpg.Connection) -> None:
    """Privileges are the first line; the trigger holds even for a role that owns the table or was granted
    too much. Statement level: it fires whether or not a row matches."""
    for table in APPEND_ONLY:
        for statement in (f"DELETE FROM {table} WHERE false", f"UPDATE {table} SET tenant_id = tenant_id",
                          f"TRUNCATE {table}"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await owner.execute(statement)
    # A role granted UPDATE by mistake is still stopped by the trigger.
    await owner.execute("GRANT UPDATE, DELETE ON audit_logs TO audit_reporter")
    tx = owner.transaction()
    await tx.start()
    try:
        await owner.execute("SET LOCAL ROLE audit_reporter")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await owner.execute("DELETE FROM audit_logs WHERE id = -1")
    finally:
        await tx.rollback()
    # ...until the next migration run re-applies privileges.sql, which takes the mistake back.
    await apply_migrations(owner)
    assert not await owner.fetchval("SELECT has_table_privilege('audit_reporter', 'audit_logs', 'DELETE')")


async def test_many_databases_on_one_server_migrate_at_once(infra: Infra) -> None:
    """Roles are cluster-wide: concurrent migrations of several databases must all succeed."""
    dsns = await asyncio.gather(*(create_database(infra.server_dsn) for _ in range(4)))
    conns = [await connect(dsn) for dsn in dsns]
    try:
        await asyncio.gather(*(apply_migrations(conn) for conn in conns))
        # Creating a role that does not exist yet, from every database at the same moment: the first
        # creation holds pg_authid's index entry until it commits, and the others wait on it, then find it.
        fresh = f"audit_race_{uuid.uuid4().hex[:10]}"

        async def ensure(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute("SELECT audit_ensure_roles($1::text[])", [fresh])
                await asyncio.sleep(0.2)  # hold the transaction open while the others try

        await asyncio.gather(*(ensure(conn) for conn in conns))
        assert await conns[0].fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", fresh) == 1
        await conns[0].execute(f'DROP ROLE "{fresh}"')
    finally:
        for conn in conns:
            await conn.close()


async def test_only_the_migration_runner_may_create_roles(database_url: str) -> None:
    conn = await asyncpg.connect(dsn_for_role(database_url, "audit_admin"))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SELECT audit_ensure_roles(ARRAY['audit_nobody'])")
    finally:
        await conn.close()
