"""Which index each feed filter reads: the partial type index (0980_type_feed_index.sql) serves the types it
holds only because the feed query states its predicate, and the types it leaves out are read from the
unfiltered feed index; likewise the partial decision index (0990_append_cost.sql) and accepts. Both as the
planner sees them with statistics, over rows in Claude Code's mix."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.reporter import queries
from tests.bench.bench_reporter import CHUNK, ORG, SEED_SQL, SESSION_SHAPE

TENANT = "plans-tenant"
ROWS = 20_000
MIGRATIONS = Path(queries.__file__).parents[2] / "shared" / "db" / "migrations"
MIGRATION = MIGRATIONS / "0980_type_feed_index.sql"
DECISION_MIGRATION = MIGRATIONS / "0990_append_cost.sql"


async def _indexes_read(conn: asyncpg.Connection, filters: queries.FeedFilters) -> set[str]:
    """The indexes of audit_logs the feed query reads, as a prepared statement (the reporter's are) under
    the session's plan_cache_mode."""
    sql, args = queries.feed_query(TENANT, filters, None, 50)
    await conn.execute(f"PREPARE feed_plan AS {sql}")
    try:
        # EXECUTE takes no bound parameters: the test's values (text) as literals.
        values = ", ".join("'" + str(value).replace("'", "''") + "'" for value in args)
        plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE feed_plan({values})")
    finally:
        await conn.execute("DEALLOCATE feed_plan")
    found: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name") == "audit_logs" and "Index Name" in node:
            found.add(node["Index Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
    return found


def test_the_feed_query_states_the_type_index_predicate_as_the_migration_does() -> None:
    assert f"WHERE {queries.INDEXED_TYPES};" in MIGRATION.read_text()
    for event_type in queries.UNINDEXED_TYPES:
        assert f"'{event_type}'" in queries.INDEXED_TYPES


def test_the_feed_query_states_the_decision_index_predicate_as_the_migration_does() -> None:
    assert f"WHERE {queries.INDEXED_DECISIONS};" in DECISION_MIGRATION.read_text()
    for decision in queries.UNINDEXED_DECISIONS:
        assert f"'{decision}'" in queries.INDEXED_DECISIONS


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        (queries.FeedFilters(event_type="api_error"), "audit_logs_type_feed_idx"),
        (queries.FeedFilters(event_type="user_prompt"), "audit_logs_type_feed_idx"),
        (queries.FeedFilters(event_type="erasure"), "audit_logs_type_feed_idx"),  # none at all: no walk
        (queries.FeedFilters(event_type="api_request"), "audit_logs_feed_idx"),
        (queries.FeedFilters(event_type="tool_result"), "audit_logs_feed_idx"),
        (queries.FeedFilters(tool="Bash"), "audit_logs_tool_feed_idx"),
        (queries.FeedFilters(decision="reject"), "audit_logs_decision_feed_idx"),
        (queries.FeedFilters(decision="accept"), "audit_logs_feed_idx"),
        # Keys compared as bytes (0990_append_cost.sql): the query's comparison must still match its index.
        (queries.FeedFilters(user="user-3@bench.example"), "audit_logs_user_key_feed_idx"),
        (queries.FeedFilters(session="session-00007"), "audit_logs_session_idx"),
        (queries.FeedFilters(), "audit_logs_feed_idx"),
    ],
)
async def test_each_feed_filter_reads_its_index(db: asyncpg.Connection, filters: queries.FeedFilters,
                                                index: str) -> None:
    start = datetime.now(UTC) - timedelta(days=30)
    for first in range(0, ROWS, CHUNK):
        await db.execute(SEED_SQL, TENANT, ORG, bytes(32), bytes(64), first, min(ROWS, first + CHUNK), 50,
                         SESSION_SHAPE, start, 30 * 86_400.0, ROWS // 50)
    await db.execute("ANALYZE audit_logs")
    # Prepared statements are planned for their values first, then perhaps by a generic plan that knows no
    # value (which cannot prove a partial index's predicate from the type asked for). Both must read the index.
    for mode in ("force_custom_plan", "force_generic_plan"):
        await db.execute(f"SET plan_cache_mode = {mode}")
        assert await _indexes_read(db, filters) == {index}, mode
