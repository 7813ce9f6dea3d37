# ruff: noqa: S608 - SQL is assembled only from this module's constants; every value is a bind parameter.
"""Folds new audit rows into the session and daily-usage rollups, per tenant, exactly once.

Why a rollup and not a query over audit_logs: "usage by user over 30 days" must read every row of those
30 days (a million for a large tenant), which no index makes fast; the rollup holds one row per session,
day and model instead. Why the reporter maintains it rather than a trigger or the signer: audit_logs'
writers are the signer's, and an audit append must never fail or slow down because of reporting.

Exactly once: each tenant's progress row is locked while its next rows (by chain sequence) are folded,
and the progress moves in the same transaction as the sums. Chain rows of a tenant become visible as a
contiguous prefix (the signer appends under a lock on the tenant's chain head and commits rows and head
together), so no row can appear later below the folded sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import asyncpg

from shared import usage_cumulative as cumulative

USER_KEY = "coalesce(user_email, user_id)"

_SUMS = (
    "count(*) AS events",
    "count(*) FILTER (WHERE event_type = 'user_prompt') AS prompts",
    "count(*) FILTER (WHERE event_type = 'api_request') AS api_calls",
    "count(*) FILTER (WHERE event_type = 'api_error') AS api_errors",
    "count(*) FILTER (WHERE event_type = 'tool_result') AS tool_calls",
    "count(*) FILTER (WHERE event_type = 'tool_result' AND success IS FALSE) AS tool_failures",
    "count(*) FILTER (WHERE event_type = 'tool_decision' AND decision = 'accept') AS tool_accepts",
    "count(*) FILTER (WHERE event_type = 'tool_decision' AND decision = 'reject') AS tool_rejects",
    "coalesce(sum(input_tokens) FILTER (WHERE event_type = 'api_request'), 0) AS input_tokens",
    "coalesce(sum(output_tokens) FILTER (WHERE event_type = 'api_request'), 0) AS output_tokens",
    "coalesce(sum(cache_read_tokens) FILTER (WHERE event_type = 'api_request'), 0) AS cache_read_tokens",
    "coalesce(sum(cache_creation_tokens) FILTER (WHERE event_type = 'api_request'), 0) AS cache_creation_tokens",
    "coalesce(sum(cost) FILTER (WHERE event_type = 'api_request'), 0) AS cost",
)
SUM_COLUMNS = tuple(expression.rsplit(" AS ", 1)[1] for expression in _SUMS)
MODEL_COLUMNS = ("api_calls", "api_errors", "input_tokens", "output_tokens", "cache_read_tokens",
                 "cache_creation_tokens", "cost")
_MODEL_SUMS = tuple(e for e in _SUMS if e.rsplit(" AS ", 1)[1] in MODEL_COLUMNS)


def _add(table: str, columns: tuple[str, ...]) -> str:
    return ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in columns)


# One statement, so the batch is read once. Each session's rows count for the session's user: the user key
# already on record for it, else the first one in this batch.
_FOLD = f"""
WITH batch AS MATERIALIZED (
    SELECT chain_seq, event_time, (event_time AT TIME ZONE 'UTC')::date AS day, event_type, session_id,
           {USER_KEY} AS user_key, user_id, user_email, plane, model, success, decision, input_tokens,
           output_tokens, cache_read_tokens, cache_creation_tokens, cost, content_captured
    FROM audit_logs
    WHERE tenant_id = $1 AND chain_seq > $2
    ORDER BY chain_seq
    LIMIT $3
),
session_users AS MATERIALIZED (
    SELECT b.session_id,
           coalesce(nullif(min(s.user_key), ''),
                    (array_agg(b.user_key ORDER BY b.chain_seq) FILTER (WHERE b.user_key IS NOT NULL))[1],
                    '') AS user_key
    -- In report_sessions' collation, which its key is in (audit_logs.session_id compares as bytes, 0990).
    FROM batch b LEFT JOIN report_sessions s ON s.tenant_id = $1 AND s.session_id = b.session_id COLLATE "default"
    WHERE b.session_id IS NOT NULL
    GROUP BY b.session_id
),
owned AS MATERIALIZED (
    SELECT b.*, CASE WHEN b.session_id IS NULL THEN coalesce(b.user_key, '') ELSE u.user_key END AS owner
    FROM batch b LEFT JOIN session_users u ON u.session_id = b.session_id
    WHERE b.plane NOT IN ('access', 'erasure')  -- the trail of reads and of erasures is not usage
),
daily AS (
    INSERT INTO report_usage_daily (tenant_id, day, user_key, session_id, {", ".join(SUM_COLUMNS)})
    SELECT $1, day, owner, coalesce(session_id, ''), {", ".join(_SUMS)}
    FROM owned
    GROUP BY 2, 3, 4
    ON CONFLICT (tenant_id, day, user_key, session_id) DO UPDATE SET {_add("report_usage_daily", SUM_COLUMNS)}
),
models AS (
    INSERT INTO report_model_daily (tenant_id, day, model, {", ".join(MODEL_COLUMNS)})
    SELECT $1, day, model, {", ".join(_MODEL_SUMS)}
    FROM batch
    WHERE model IS NOT NULL
    GROUP BY 2, 3
    ON CONFLICT (tenant_id, day, model) DO UPDATE SET {_add("report_model_daily", MODEL_COLUMNS)}
),
sessions AS (
    INSERT INTO report_sessions (tenant_id, session_id, user_key, user_id, user_email, plane, first_event_time,
                                 last_event_time, content_captured, {", ".join(SUM_COLUMNS)})
    SELECT $1, b.session_id, min(u.user_key),
           (array_agg(b.user_id ORDER BY b.chain_seq) FILTER (WHERE b.user_id IS NOT NULL))[1],
           (array_agg(b.user_email ORDER BY b.chain_seq) FILTER (WHERE b.user_email IS NOT NULL))[1],
           (array_agg(b.plane ORDER BY b.chain_seq))[1],
           min(b.event_time), max(b.event_time), bool_or(b.content_captured), {", ".join(_SUMS)}
    FROM batch b JOIN session_users u ON u.session_id = b.session_id
    GROUP BY b.session_id
    ON CONFLICT (tenant_id, session_id) DO UPDATE SET
        user_key = CASE WHEN report_sessions.user_key = '' THEN excluded.user_key ELSE report_sessions.user_key END,
        user_id = coalesce(report_sessions.user_id, excluded.user_id),
        user_email = coalesce(report_sessions.user_email, excluded.user_email),
        first_event_time = least(report_sessions.first_event_time, excluded.first_event_time),
        last_event_time = greatest(report_sessions.last_event_time, excluded.last_event_time),
        content_captured = report_sessions.content_captured OR excluded.content_captured,
        {_add("report_sessions", SUM_COLUMNS)}
)
-- What the batch adds per user and day, for the running totals, with the batch's size and last sequence.
SELECT day, owner, {", ".join(_SUMS)}, (SELECT count(*) FROM batch) AS batch_rows,
       (SELECT max(chain_seq) FROM batch) AS last_seq
FROM owned
GROUP BY day, owner
UNION ALL
-- A batch of access rows only adds nothing, but must still move the fold on.
SELECT NULL, NULL, {", ".join("NULL" for _ in _SUMS)}, (SELECT count(*) FROM batch), (SELECT max(chain_seq) FROM batch)
WHERE EXISTS (SELECT 1 FROM batch) AND NOT EXISTS (SELECT 1 FROM owned)
"""
_CUMULATIVE_TYPES = {c: "numeric" if c == "cost" else "bigint" for c in SUM_COLUMNS}


@dataclass(frozen=True)
class FoldResult:
    rows: int
    folded_seq: int
    skipped: bool = False


async def fold_tenant(conn: asyncpg.Connection, tenant: str, max_rows: int, *, wait: bool = True) -> FoldResult:
    """Fold up to ``max_rows`` new rows of ``tenant``. With ``wait=False`` a fold already running elsewhere
    is left to finish on its own (``skipped``), so a request never queues behind the background fold."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO report_fold_progress (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING", tenant
        )
        lock = "FOR UPDATE" if wait else "FOR UPDATE SKIP LOCKED"
        folded = await conn.fetchval(
            f"SELECT folded_seq FROM report_fold_progress WHERE tenant_id = $1 {lock}", tenant
        )
        if folded is None:
            return FoldResult(0, -1, skipped=True)
        added = await conn.fetch(_FOLD, tenant, folded, max_rows)
        if not added:
            return FoldResult(0, folded)
        amounts = {(row["owner"], row["day"]): {c: row[c] for c in SUM_COLUMNS} for row in added
                   if row["owner"] is not None}
        await cumulative.add(conn, "report_usage_cumulative", tenant, SUM_COLUMNS, _CUMULATIVE_TYPES, amounts)
        days_by_user: dict[str, list[date]] = {}
        for user, day in amounts:
            days_by_user.setdefault(user, []).append(day)
        await cumulative.note_users(conn, tenant, days_by_user)
        rows, last_seq = added[0]["batch_rows"], added[0]["last_seq"]
        await conn.execute(
            "UPDATE report_fold_progress SET folded_seq = $2, updated_at = now() WHERE tenant_id = $1",
            tenant, last_seq,
        )
        return FoldResult(rows, last_seq)


async def pending_tenants(conn: asyncpg.Connection) -> list[str]:
    """Tenants whose chain head is ahead of what has been folded."""
    rows = await conn.fetch(
        "SELECT h.tenant_id FROM chain_heads h LEFT JOIN report_fold_progress p USING (tenant_id)"
        " WHERE h.head_seq > coalesce(p.folded_seq, 0) ORDER BY h.tenant_id"
    )
    return [row["tenant_id"] for row in rows]


async def catch_up(conn: asyncpg.Connection, tenant: str, max_rows: int, *, wait: bool,
                   batch_rows: int | None = None) -> FoldResult:
    """Fold until the tenant is current or ``max_rows`` rows have been folded by this call, in transactions
    of at most ``batch_rows`` rows (default: one transaction)."""
    folded, head = await fold_state(conn, tenant)
    if folded >= head:
        return FoldResult(0, folded)  # the common case on a request path: one read, no lock, no write
    total, last = 0, FoldResult(0, folded)
    while total < max_rows:
        last = await fold_tenant(conn, tenant, min(max_rows - total, batch_rows or max_rows), wait=wait)
        total += last.rows
        if last.skipped or last.rows == 0:
            break
    return FoldResult(total, last.folded_seq, last.skipped)


async def fold_state(conn: asyncpg.Connection, tenant: str) -> tuple[int, int]:
    """``(folded_seq, head_seq)`` of a tenant: how current the rollups are."""
    row = await conn.fetchrow(
        "SELECT coalesce((SELECT folded_seq FROM report_fold_progress WHERE tenant_id = $1), 0) AS folded,"
        " coalesce((SELECT head_seq FROM chain_heads WHERE tenant_id = $1), 0) AS head",
        tenant,
    )
    assert row is not None
    return row["folded"], row["head"]
