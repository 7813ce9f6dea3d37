"""The rollups equal a direct aggregation of audit_logs, however the fold is split or raced."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg

from services.reporter import queries
from services.reporter.params import DayWindow
from services.reporter.rollup import catch_up, fold_state, pending_tenants
from shared.db.pool import connect, create_pool
from tests.integration.reporter.scenario import TENANT_A, TENANT_B, append, build, seed

DIRECT = """
SELECT coalesce(user_email, user_id) AS user_key, count(*) AS events,
       count(*) FILTER (WHERE event_type = 'user_prompt') AS prompts,
       count(*) FILTER (WHERE event_type = 'tool_decision' AND decision = 'reject') AS rejects,
       coalesce(sum(input_tokens) FILTER (WHERE event_type = 'api_request'), 0) AS input_tokens,
       coalesce(sum(cost) FILTER (WHERE event_type = 'api_request'), 0) AS cost
FROM audit_logs WHERE tenant_id = $1 GROUP BY 1 ORDER BY 1
"""
ROLLED = """
SELECT user_key, sum(events) AS events, sum(prompts) AS prompts, sum(tool_rejects) AS rejects,
       sum(input_tokens) AS input_tokens, sum(cost) AS cost
FROM report_usage_daily WHERE tenant_id = $1 GROUP BY 1 ORDER BY 1
"""


async def test_racing_folds_in_small_batches_count_every_row_once(database_url: str,
                                                                   db: asyncpg.Connection) -> None:
    scenario = await seed(db)
    assert await pending_tenants(db) == [TENANT_A, TENANT_B]
    conns = [await connect(database_url) for _ in range(6)]
    try:
        await asyncio.gather(*(catch_up(c, TENANT_A, 100, wait=True) for c in conns[:3]),
                             *(catch_up(c, TENANT_B, 100, wait=True) for c in conns[3:]))
        # More rows arrive after the first fold: folded on top, never twice.
        later = build(scenario.start + timedelta(days=1), scenario.signer).of_tenant(TENANT_A)
        later = [type(e)(**{**e.__dict__, "event_id": e.event_id + "-later"}) for e in later]
        await append(db, scenario.signer, later, first_offset=len(scenario.events))
        await asyncio.gather(*(catch_up(c, TENANT_A, 100, wait=False, batch_rows=2) for c in conns))
        await catch_up(db, TENANT_A, 100, wait=True)
    finally:
        for c in conns:
            await c.close()
    assert await pending_tenants(db) == []
    assert await fold_state(db, TENANT_A) == (24, 24)
    for tenant in (TENANT_A, TENANT_B):
        direct = [tuple(r) for r in await db.fetch(DIRECT, tenant)]
        rolled = [tuple(r) for r in await db.fetch(ROLLED, tenant)]
        assert rolled == direct
    sessions = await db.fetch("SELECT session_id, events, first_event_time, last_event_time FROM report_sessions"
                              " WHERE tenant_id = $1 ORDER BY session_id", TENANT_A)
    raw = await db.fetch("SELECT session_id, count(*) AS events, min(event_time) AS first, max(event_time) AS last"
                         " FROM audit_logs WHERE tenant_id = $1 GROUP BY 1 ORDER BY 1", TENANT_A)
    assert [tuple(r) for r in sessions] == [tuple(r) for r in raw]


async def test_running_totals_answer_any_window_like_the_rows_do(database_url: str, db: asyncpg.Connection) -> None:
    """Windows over the running totals equal a direct count, also after usage arrives for an earlier day."""
    scenario = await seed(db)
    await catch_up(db, TENANT_A, 1000, wait=True)
    base = build(scenario.start, scenario.signer).of_tenant(TENANT_A)
    offset = len(scenario.events)
    for shift, tag in ((timedelta(days=2), "later"), (timedelta(days=-3), "earlier")):
        # Usage for a day after, then for a day before, everything folded so far.
        extra = [type(e)(**{**e.__dict__, "event_id": f"{e.event_id}-{tag}", "event_time": e.event_time + shift,
                            "session_id": f"{e.session_id}-{tag}"}) for e in base]
        await append(db, scenario.signer, extra, first_offset=offset)
        offset += len(extra)
        await catch_up(db, TENANT_A, 1000, wait=True)
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        first = (scenario.start - timedelta(days=4)).date()
        for a in range(0, 8):
            for b in range(a + 1, 9):
                window = DayWindow(first + timedelta(days=a), first + timedelta(days=b))
                report = await queries.usage(pool.acquire, TENANT_A, "user", window, 100)
                got = {g["key"]: (g["events"], g["prompts"], g["tokens"]["input"], g["cost"]) for g in report["groups"]}
                rows = await db.fetch(
                    "SELECT coalesce(user_email, user_id) AS k, count(*) AS events,"
                    " count(*) FILTER (WHERE event_type = 'user_prompt') AS prompts,"
                    " coalesce(sum(input_tokens) FILTER (WHERE event_type = 'api_request'), 0) AS input,"
                    " coalesce(sum(cost) FILTER (WHERE event_type = 'api_request'), 0) AS cost"
                    " FROM audit_logs WHERE tenant_id = $1 AND event_time >= $2 AND event_time < $3 GROUP BY 1",
                    TENANT_A, window.since, window.until)
                expected = {r["k"]: (r["events"], r["prompts"], r["input"], f"{r['cost']:.6f}") for r in rows}
                assert got == expected, (window, got, expected)
    finally:
        await pool.close()
