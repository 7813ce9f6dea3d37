# ruff: noqa: S608 - SQL is assembled only from this module's constants; every value is a bind parameter.
"""Every read the reporter makes. Each query is bound to one tenant, always the caller's, as ``$1``.

Results are plain JSON-ready dicts, shared by the API and the portal: times as ISO 8601 strings, money as
decimal strings with six places, hashes as hex, keys and signatures as base64.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from services.reporter import completeness, usagesql
from services.reporter.params import Cursor, DayWindow
from services.reporter.rollup import SUM_COLUMNS, USER_KEY, fold_state
from shared.canonical import COST_SCALE
from shared.chain import (
    HASH_VERSION,
    HASHED_COLUMNS,
    checkpoint_message,
    domain_tag,
    row_hash,
    stored_canonical_bytes,
)
from shared.usage_columns import DAILY_COLUMNS
from shared.witness import Witness

# Rows returned for one session; beyond these the summary says it was truncated.
MAX_SESSION_PROMPTS = 1_000
MAX_SESSION_DECISIONS = 1_000
MAX_SESSION_ERRORS = 500
MAX_SESSION_CONFLICTS = 500

# Hash version 2 keeps a row's content in audit_content (erasable); version 1 in the row itself.
_CONTENT = (
    "coalesce((SELECT c.content FROM audit_content c WHERE c.tenant_id = audit_logs.tenant_id"
    " AND c.chain_seq = audit_logs.chain_seq), audit_logs.content)"
)
# Where content was erased (auditctl erase): when, by whom and why, shown in its place.
_ERASURE = (
    "(SELECT jsonb_build_object('erased_at', e.erased_at, 'erased_by', e.erased_by, 'reason', e.reason,"
    " 'erasure_event_id', e.erasure_event_id) FROM content_erasures e"
    " WHERE e.tenant_id = audit_logs.tenant_id AND e.chain_seq = audit_logs.chain_seq)"
)
_FEED_COLUMNS = (
    "id", "event_id", "org_id", "plane", "event_type", "event_time", "received_at", "session_id", "correlation_id",
    "event_sequence", "user_email", "user_id", "user_account_uuid", "claimed_org_id", "claimed_org_mismatch",
    "service_name", "service_version", "model", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_creation_tokens", "tokens_used", "cost", "duration_ms", "decision", "decision_source", "tool_name",
    "success", "status_code", "attempt", f"{_CONTENT} AS content", "content_lengths", "redacted_fields",
    "content_captured", "attributes", "chain_seq", f"{_ERASURE} AS erasure", "sequence_conflict",
)


def erasure_of(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The erasure of a row's content, with the line shown where the content was; None if not erased."""
    if value is None:
        return None
    erased_on = str(value["erased_at"])[:10]
    return {**value, "text": f"erased on {erased_on} ({value['reason']})"}


def iso(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def money(value: Decimal | float | int | None) -> str:
    """Cost as a decimal string with six places; floats (from metrics) are rounded to the micro-dollar."""
    if value is None:
        return format(Decimal(0).quantize(COST_SCALE), "f")
    amount = value if isinstance(value, Decimal) else Decimal(str(value))
    return format(amount.quantize(COST_SCALE), "f")


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def user_of(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "key": row["user_email"] or row["user_id"],
        "id": row["user_id"],
        "email": row["user_email"],
        "account_uuid": row.get("user_account_uuid"),
    }


# --- decisions feed -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedFilters:
    plane: str | None = None
    event_type: str | None = None
    user: str | None = None
    session: str | None = None
    decision: str | None = None
    tool: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # Set from the caller's role (services/reporter/authz.py), never from a parameter: a developer's own
    # e-mail, and whether the access trail (plane 'access') is left out.
    own_email: str | None = None
    hide_access: bool = False


ACCESS_PLANE = "access"


class _Where:
    """Builds ``WHERE`` clauses with numbered parameters; the tenant is always ``$1``."""

    def __init__(self, tenant: str) -> None:
        self.args: list[Any] = [tenant]
        self.clauses = ["tenant_id = $1"]

    def add(self, template: str, *values: Any) -> None:
        placeholders = []
        for value in values:
            self.args.append(value)
            placeholders.append(f"${len(self.args)}")
        self.clauses.append(template.format(*placeholders))

    def sql(self) -> str:
        return " AND ".join(self.clauses)


def feed_item(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "event_id": row["event_id"],
        "event_time": iso(row["event_time"]),
        "received_at": iso(row["received_at"]),
        "plane": row["plane"],
        "event_type": row["event_type"],
        "org_id": row["org_id"],
        "user": user_of(row),
        "session_id": row["session_id"],
        "prompt_id": row["correlation_id"],
        "sequence": row["event_sequence"],
        "service": {"name": row["service_name"], "version": row["service_version"]},
        "claimed_org_id": row["claimed_org_id"],
        "claimed_org_mismatch": row["claimed_org_mismatch"],
        "tool_name": row["tool_name"],
        "decision": row["decision"],
        "decision_source": row["decision_source"],
        "success": row["success"],
        "model": row["model"],
        "tokens": {
            "input": row["input_tokens"],
            "output": row["output_tokens"],
            "cache_read": row["cache_read_tokens"],
            "cache_creation": row["cache_creation_tokens"],
            "total": row["tokens_used"],
        },
        "cost": None if row["cost"] is None else money(row["cost"]),
        "duration_ms": row["duration_ms"],
        "status_code": row["status_code"],
        "attempt": row["attempt"],
        "content": None if row["erasure"] is not None else row["content"],
        "erasure": erasure_of(row["erasure"]),
        "content_lengths": row["content_lengths"],
        "redacted_fields": row["redacted_fields"],
        "content_captured": row["content_captured"],
        "attributes": row["attributes"],
        "chain_seq": row["chain_seq"],
        # Another event of this tenant claims the same session and sequence (docs/auditing.md): both are kept.
        "sequence_conflict": row["sequence_conflict"],
        "proof": f"/api/v1/audit/records/{row['id']}/proof",
    }


# The event types audit_logs_type_feed_idx leaves out (0980_type_feed_index.sql): most rows are of these, so
# the unfiltered feed index, read newest first and filtered, finds a page of them within a few pages.
UNINDEXED_TYPES = ("api_request", "tool_result")
# The index's predicate, word for word: the planner uses a partial index only for a query that states it,
# and a parameter (the type asked for) cannot prove it.
INDEXED_TYPES = "event_type NOT IN ('api_request', 'tool_result')"
# Likewise the decision the decision index leaves out (0990_append_cost.sql), nearly every decision, and the
# index's predicate.
UNINDEXED_DECISIONS = ("accept",)
INDEXED_DECISIONS = "decision <> 'accept'"


def feed_query(tenant: str, filters: FeedFilters, cursor: Cursor | None, limit: int) -> tuple[str, list[Any]]:
    """The feed's SQL and arguments; each filter is an equality on an indexed column (see 0400_reporting.sql)."""
    where = _Where(tenant)
    for column, value in (("plane", filters.plane), ("event_type", filters.event_type),
                          ("session_id", filters.session), ("decision", filters.decision),
                          ("tool_name", filters.tool)):
        if value is not None:
            where.add(f"{column} = {{}}", value)
    if filters.event_type is not None and filters.event_type not in UNINDEXED_TYPES:
        where.add(INDEXED_TYPES)  # true already for this type: it lets the planner read the type index
    if filters.decision is not None and filters.decision not in UNINDEXED_DECISIONS:
        where.add(INDEXED_DECISIONS)  # likewise for the decision index
    if filters.user is not None:
        where.add(f"{USER_KEY} = {{}}", filters.user)
    if filters.own_email is not None:
        where.add("user_email = {}", filters.own_email)
    if filters.hide_access:
        where.add("plane <> {}", ACCESS_PLANE)
    if filters.since is not None:
        where.add("event_time >= {}", filters.since)
    if filters.until is not None:
        where.add("event_time < {}", filters.until)
    if cursor is not None:
        where.add("(event_time, id) < ({}, {})", cursor.at, cursor.after)
    sql = (f"SELECT {', '.join(_FEED_COLUMNS)} FROM audit_logs WHERE {where.sql()}"
           f" ORDER BY event_time DESC, id DESC LIMIT {int(limit) + 1}")
    return sql, where.args


async def feed(conn: asyncpg.Connection, tenant: str, filters: FeedFilters, cursor: Cursor | None,
               limit: int) -> tuple[list[dict[str, Any]], Cursor | None]:
    """Newest first, by ``(event_time, id)``; one row more than the page tells whether another page exists."""
    sql, args = feed_query(tenant, filters, cursor, limit)
    rows = await conn.fetch(sql, *args)
    page = rows[:limit]
    following = Cursor(page[-1]["event_time"], page[-1]["id"]) if len(rows) > limit else None
    return [feed_item(row) for row in page], following


# --- sessions -------------------------------------------------------------------------------------------


def _counts(row: Mapping[str, Any]) -> dict[str, Any]:
    """The event figures of a rollup row; a figure the row does not have (per-model rows have no prompts or
    tool decisions) is None."""

    def value(name: str) -> Any:
        return row.get(name)

    accepts, rejects = value("tool_accepts"), value("tool_rejects")
    tokens = {name: value(f"{name}_tokens") for name in ("input", "output", "cache_read", "cache_creation")}
    decided = None if accepts is None or rejects is None else accepts + rejects
    return {
        "events": value("events"),
        "prompts": value("prompts"),
        "api_calls": value("api_calls"),
        "errors": value("api_errors"),
        "tool_calls": value("tool_calls"),
        "tool_failures": value("tool_failures"),
        "tool_decisions": None if decided is None else {"accepted": accepts, "rejected": rejects},
        "tool_acceptance_rate": None if not decided else round(accepts / decided, 4),
        "tokens": {**tokens, "total": sum(t or 0 for t in tokens.values())},
        "cost": money(value("cost")),
    }


async def sessions(conn: asyncpg.Connection, tenant: str, *, user: str | None, since: datetime | None,
                   until: datetime | None, cursor: Cursor | None,
                   limit: int, own_email: str | None = None) -> tuple[list[dict[str, Any]], Cursor | None]:
    """Sessions active in ``[since, until)``, most recently active first, from the session rollup;
    ``own_email``: only sessions of that user (a developer's own)."""
    where = _Where(tenant)
    if user is not None:
        where.add("user_key = {}", user)
    if own_email is not None:
        where.add("user_email = {}", own_email)
    if since is not None:
        where.add("last_event_time >= {}", since)
    if until is not None:
        where.add("first_event_time < {}", until)
    if cursor is not None:
        where.add("(last_event_time, session_id) < ({}, {})", cursor.at, cursor.after)
    rows = await conn.fetch(
        f"SELECT * FROM report_sessions WHERE {where.sql()}"
        f" ORDER BY last_event_time DESC, session_id DESC LIMIT {int(limit) + 1}",
        *where.args,
    )
    page = rows[:limit]
    following = Cursor(page[-1]["last_event_time"], page[-1]["session_id"]) if len(rows) > limit else None
    items = [
        {
            "session_id": row["session_id"],
            "user": {"key": row["user_key"] or None, "id": row["user_id"], "email": row["user_email"]},
            "plane": row["plane"],
            "first_event_time": iso(row["first_event_time"]),
            "last_event_time": iso(row["last_event_time"]),
            "content_captured": row["content_captured"],
            **_counts(row),
        }
        for row in page
    ]
    return items, following


_SESSION = "tenant_id = $1 AND session_id = $2"
_OWN_SESSION = "tenant_id = $1 AND session_id = $2 AND user_email = $3"


async def session_summary(conn: asyncpg.Connection, tenant: str, session_id: str,
                          own_email: str | None = None) -> dict[str, Any] | None:
    """What happened in one session, read from its own audit rows (exact, not from the rollup);
    ``own_email``: only that user's rows of it (a developer's own)."""
    if own_email is not None:
        return await _session_summary(conn, _OWN_SESSION, (tenant, session_id, own_email), session_id, tenant)
    return await _session_summary(conn, _SESSION, (tenant, session_id), session_id, tenant)


async def _session_summary(conn: asyncpg.Connection, where: str, key: tuple[str, ...], session_id: str,
                           tenant: str) -> dict[str, Any] | None:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # Event types and tools listed in the database's order: their columns compare as bytes (0990).
        by_type = await conn.fetch(
            f"SELECT event_type, count(*) AS n, min(event_time) AS first, max(event_time) AS last,"
            f" bool_or(content_captured) AS captured, count(*) FILTER (WHERE content_captured) AS captured_rows,"
            f" count(*) FILTER (WHERE redacted_fields::text LIKE '%WITHHELD%') AS withheld_rows"
            f" FROM audit_logs WHERE {where} GROUP BY event_type ORDER BY event_type COLLATE \"default\"",
            *key,
        )
        if not by_type:
            return None
        identity = await conn.fetchrow(
            f"SELECT user_id, user_email, user_account_uuid, plane, service_name, service_version, org_id"
            f" FROM audit_logs WHERE {where} ORDER BY (user_id IS NULL AND user_email IS NULL), event_time, id"
            f" LIMIT 1",
            *key,
        )
        prompts = await conn.fetch(
            f"SELECT id, event_time, event_sequence, correlation_id, {_CONTENT}->>'prompt' AS text,"
            f" {_ERASURE} AS erasure,"
            f" content_lengths->'prompt' AS length, redacted_fields->'prompt' AS redactions, content_captured"
            f" FROM audit_logs WHERE {where} AND event_type = 'user_prompt'"
            f" ORDER BY event_time, event_sequence NULLS LAST, id LIMIT {MAX_SESSION_PROMPTS + 1}",
            *key,
        )
        tools = await conn.fetch(
            f"SELECT tool_name,"
            f" count(*) FILTER (WHERE event_type = 'tool_result') AS calls,"
            f" count(*) FILTER (WHERE event_type = 'tool_result' AND success IS TRUE) AS succeeded,"
            f" count(*) FILTER (WHERE event_type = 'tool_result' AND success IS FALSE) AS failed,"
            f" count(*) FILTER (WHERE event_type = 'tool_decision' AND decision = 'accept') AS accepted,"
            f" count(*) FILTER (WHERE event_type = 'tool_decision' AND decision = 'reject') AS rejected"
            f" FROM audit_logs WHERE {where} AND tool_name IS NOT NULL GROUP BY tool_name"
            f" ORDER BY tool_name COLLATE \"default\"",
            *key,
        )
        decisions = await conn.fetch(
            f"SELECT id, event_time, event_sequence, correlation_id, tool_name, decision, decision_source"
            f" FROM audit_logs WHERE {where} AND event_type = 'tool_decision'"
            f" ORDER BY event_time, event_sequence NULLS LAST, id LIMIT {MAX_SESSION_DECISIONS + 1}",
            *key,
        )
        models = await conn.fetch(
            f"SELECT coalesce(model, '') AS model, count(*) AS calls,"
            f" coalesce(sum(input_tokens), 0)::bigint AS input_tokens,"
            f" coalesce(sum(output_tokens), 0)::bigint AS output_tokens,"
            f" coalesce(sum(cache_read_tokens), 0)::bigint AS cache_read_tokens,"
            f" coalesce(sum(cache_creation_tokens), 0)::bigint AS cache_creation_tokens,"
            f" coalesce(sum(cost), 0) AS cost, coalesce(sum(duration_ms), 0)::bigint AS duration_ms"
            f" FROM audit_logs WHERE {where} AND event_type = 'api_request' GROUP BY 1 ORDER BY 1",
            *key,
        )
        errors = await conn.fetch(
            f"SELECT id, event_time, event_type, model, status_code, attempt, tool_name, duration_ms,"
            f" {_CONTENT}->>'error' AS message, {_ERASURE} AS erasure FROM audit_logs WHERE {where}"
            f" AND (event_type = 'api_error' OR (event_type = 'tool_result' AND success IS FALSE))"
            f" ORDER BY event_time, event_sequence NULLS LAST, id LIMIT {MAX_SESSION_ERRORS + 1}",
            *key,
        )
        conflicts = await conn.fetch(
            f"SELECT id, event_sequence, event_type, event_time, event_id FROM audit_logs"
            f" WHERE {where} AND sequence_conflict ORDER BY event_sequence, id LIMIT {MAX_SESSION_CONFLICTS + 1}",
            *key,
        )
        metrics = await conn.fetchrow(usagesql.SESSION_FIGURES, tenant, session_id)
        sequence_report = await completeness.session(conn, tenant, session_id)
    assert identity is not None
    counts = {row["event_type"]: row["n"] for row in by_type}
    token_totals = {
        name: sum(row[f"{name}_tokens"] for row in models)
        for name in ("input", "output", "cache_read", "cache_creation")
    }
    accepted = sum(row["accepted"] for row in tools)
    rejected = sum(row["rejected"] for row in tools)
    return {
        "session_id": session_id,
        "user": user_of(identity),
        "org_id": identity["org_id"],
        "plane": identity["plane"],
        "service": {"name": identity["service_name"], "version": identity["service_version"]},
        "first_event_time": iso(min(row["first"] for row in by_type)),
        "last_event_time": iso(max(row["last"] for row in by_type)),
        "events": sum(counts.values()),
        "event_types": counts,
        "content_captured": any(row["captured"] for row in by_type),
        "content_withheld_events": sum(row["withheld_rows"] for row in by_type),
        "prompts": [
            {
                "id": row["id"],
                "prompt_id": row["correlation_id"],
                "time": iso(row["event_time"]),
                "sequence": row["event_sequence"],
                "text": row["text"],
                "erasure": erasure_of(row["erasure"]),
                "length": row["length"],
                "redactions": row["redactions"] or {},
                "content_captured": row["content_captured"],
                "proof": f"/api/v1/audit/records/{row['id']}/proof",
            }
            for row in prompts[:MAX_SESSION_PROMPTS]
        ],
        "tools": [dict(row) for row in tools],
        "approvals": {
            "accepted": accepted,
            "rejected": rejected,
            "decisions": [
                {
                    "id": row["id"],
                    "time": iso(row["event_time"]),
                    "prompt_id": row["correlation_id"],
                    "tool_name": row["tool_name"],
                    "decision": row["decision"],
                    "source": row["decision_source"],
                    "proof": f"/api/v1/audit/records/{row['id']}/proof",
                }
                for row in decisions[:MAX_SESSION_DECISIONS]
            ],
        },
        "api": {
            "calls": sum(row["calls"] for row in models),
            "models": [
                {
                    "model": row["model"] or None,
                    "calls": row["calls"],
                    "tokens": {name: row[f"{name}_tokens"] for name in token_totals},
                    "cost": money(row["cost"]),
                    "duration_ms": row["duration_ms"],
                }
                for row in models
            ],
            "tokens": {**token_totals, "total": sum(token_totals.values())},
            "cost": money(sum((row["cost"] for row in models), Decimal(0))),
        },
        "errors": [
            {
                "id": row["id"],
                "time": iso(row["event_time"]),
                "event_type": row["event_type"],
                "model": row["model"],
                "tool_name": row["tool_name"],
                "status_code": row["status_code"],
                "attempt": row["attempt"],
                "duration_ms": row["duration_ms"],
                "message": row["message"],
                "erasure": erasure_of(row["erasure"]),
            }
            for row in errors[:MAX_SESSION_ERRORS]
        ],
        # Different events that claim the same sequence number of this session: all kept, none trusted over
        # another; a client bug or a forged event (docs/auditing.md, sequence_conflict).
        "sequence_conflicts": _conflict_groups(conflicts[:MAX_SESSION_CONFLICTS]),
        "metrics": usagesql.metric_figures(metrics),
        "completeness": sequence_report,
        "truncated": {
            "prompts": len(prompts) > MAX_SESSION_PROMPTS,
            "decisions": len(decisions) > MAX_SESSION_DECISIONS,
            "errors": len(errors) > MAX_SESSION_ERRORS,
            "sequence_conflicts": len(conflicts) > MAX_SESSION_CONFLICTS,
        },
    }


def _conflict_groups(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["event_sequence"], []).append({
            "id": row["id"], "event_id": row["event_id"], "event_type": row["event_type"],
            "time": iso(row["event_time"]), "proof": f"/api/v1/audit/records/{row['id']}/proof",
        })
    return [{"sequence": sequence, "events": events} for sequence, events in groups.items()]


# --- usage ----------------------------------------------------------------------------------------------

GROUPINGS = usagesql.GROUPINGS
ConnectionFactory = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]


def _add_rows(rows: list[Mapping[str, Any]], columns: tuple[str, ...]) -> dict[str, Any]:
    """Column sums over aggregated rows; money (text with six places) summed exactly."""
    total: dict[str, Any] = {}
    for column in columns:
        values = [row[column] for row in rows if row[column] is not None]
        if column in ("cost", "m_cost"):
            total[column] = money(sum((Decimal(v) for v in values), Decimal(0)))
        else:
            total[column] = sum(values)
    return total


async def _nothing() -> list[Any]:
    return []


async def usage(connection: ConnectionFactory, tenant: str, group_by: str, window: DayWindow,
                limit: int, offset: int = 0) -> dict[str, Any]:
    """Usage per user, model or UTC day over whole days, from the rollups.

    The queries run concurrently on separate connections; each reads rollups that only grow, so the
    figures of one report may be a fold apart, never inconsistent within a group.
    """
    queries = usagesql.usage_queries(group_by)
    days = (tenant, window.first_day, window.end_day)
    span = (tenant, window.since, window.until)

    async def fetch(sql: str, args: tuple[Any, ...]) -> list[Any]:
        async with connection() as conn:
            return list(await conn.fetch(sql, *args))

    async def rollup_state() -> tuple[int, int]:
        async with connection() as conn:
            return await fold_state(conn, tenant)

    wanted = [fetch(queries.events, days),
              fetch(queries.metrics, days) if queries.metrics else _nothing(),
              fetch(queries.sessions, span) if queries.sessions else fetch(usagesql.TOTAL_SESSIONS, span)]
    if group_by == "model":
        wanted.append(fetch(usagesql.TOTALS, days))
    results = await asyncio.gather(rollup_state(), *wanted)
    folded, head = results[0]
    event_rows, metric_rows, session_rows = results[1], results[2], results[3]
    events = {row["key"]: row for row in event_rows}
    metrics = {row["key"]: row for row in metric_rows} if queries.metrics else events
    if queries.sessions:
        sessions = {row["key"]: row["sessions"] for row in session_rows}
        # A session counts for one user only, so the per-user counts add up.
        total_sessions = sum(sessions.values())
    else:
        sessions = {key: row["sessions"] for key, row in events.items()} if group_by == "day" else {}
        total_sessions = session_rows[0]["count"]

    # Order all groups (days in order, others by cost), then build only the requested page.
    keys = list(events.keys() | metrics.keys() | sessions.keys())
    if group_by == "day":
        keys.sort()
    else:
        def by_cost(key: Any) -> tuple[float, str]:
            row = events.get(key)
            return -float(row["cost"] if row is not None and row["cost"] else 0), key or ""

        keys.sort(key=by_cost)
    metric_columns = usagesql.METRIC_MODEL_FIGURES if group_by == "model" else DAILY_COLUMNS
    groups = [
        {
            "key": key.isoformat() if isinstance(key, date) else (key or None),
            "sessions": sessions.get(key, 0) if group_by != "model" else None,
            **usagesql.event_figures(events.get(key), full=group_by != "model"),
            "metrics": usagesql.metric_figures(metrics.get(key), metric_columns),
        }
        for key in keys[offset:offset + limit]
    ]
    if group_by == "model":
        totals = results[4][0]
    else:
        totals = {**_add_rows(event_rows, SUM_COLUMNS), **_add_rows(list(metrics.values()), DAILY_COLUMNS)}
    following = offset + limit if offset + limit < len(keys) else None
    return {
        "group_by": group_by,
        "since": iso(window.since),
        "until": iso(window.until),
        "groups": groups,
        "total_groups": len(keys),
        "offset": offset,
        "next_offset": following,
        "totals": {
            "sessions": total_sessions,
            **usagesql.event_figures(totals, full=True),
            "metrics": usagesql.metric_figures(totals),
        },
        "rollup": {"folded_through_seq": folded, "head_seq": head, "current": folded >= head},
    }


# --- proofs, chain status, keys --------------------------------------------------------------------------

async def latest_checkpoint(conn: asyncpg.Connection, tenant: str, seq: int) -> dict[str, Any] | None:
    """The newest signed checkpoint at or after ``seq`` (0100_chain_keys_and_checkpoints.sql), with the exact
    bytes its signature covers; None while no checkpoint covers the row yet."""
    try:
        row = await conn.fetchrow(
            "SELECT c.chain_seq, c.head_hash, c.created_at, c.key_id, c.signature, k.public_key"
            " FROM chain_checkpoints c LEFT JOIN signing_keys k USING (key_id)"
            " WHERE c.tenant_id = $1 AND c.chain_seq >= $2 ORDER BY c.chain_seq DESC LIMIT 1",
            tenant, seq,
        )
    except asyncpg.UndefinedTableError:  # a database migrated before checkpoints existed
        return None
    if row is None:
        return None
    head_hash = bytes(row["head_hash"])
    return {
        "chain_seq": row["chain_seq"],
        "head_hash": head_hash.hex(),
        "created_at": iso(row["created_at"]),
        "key_id": row["key_id"],
        "public_key": None if row["public_key"] is None else b64(bytes(row["public_key"])),
        "signature": b64(bytes(row["signature"])),
        "message": b64(checkpoint_message(tenant, row["chain_seq"], head_hash, row["created_at"], row["key_id"])),
        "rows_after_record": row["chain_seq"] - seq,
    }


_PROOF_COLUMNS = ", ".join(
    dict.fromkeys(("id", *HASHED_COLUMNS, "prev_hash", "row_hash", "signature", "content_digest"))
)


async def witness_entry(
    conn: asyncpg.Connection, tenant: str, seq: int, witness: Witness | None
) -> dict[str, Any]:
    """The witness entry that covers row ``seq``: the first checkpoint at or after it, where the witness keeps
    it, and whether the signer has published it there yet (checkpoint_witness_cursor, 0610_integrity.sql)."""
    try:
        cursor = await conn.fetchrow(
            "SELECT published_seq, witness, published_at FROM checkpoint_witness_cursor WHERE tenant_id = $1", tenant
        )
    except (asyncpg.UndefinedTableError, asyncpg.InsufficientPrivilegeError) as exc:
        # A database not migrated this far, or a reporter role not granted the cursor: said, not a 500.
        return {"status": "unknown", "detail": f"the publication cursor cannot be read ({type(exc).__name__})"}
    published = cursor["published_seq"] if cursor else 0
    covering = await conn.fetchval(
        "SELECT min(chain_seq) FROM chain_checkpoints WHERE tenant_id = $1 AND chain_seq >= $2", tenant, seq
    )
    if covering is None:
        status = "not_checkpointed_yet"
    else:
        status = "published" if covering <= published else "awaiting_publication"
    return {
        "status": status,
        "checkpoint_seq": covering,
        "witness": (cursor["witness"] if cursor and cursor["witness"] else None)
        or (witness.description if witness else None),
        "location": witness.location(tenant, covering) if witness is not None and covering is not None else None,
        "published_through_seq": published,
        "published_at": iso(cursor["published_at"]) if cursor else None,
    }


async def proof(
    conn: asyncpg.Connection, tenant: str, record_id: int, witness: Witness | None = None
) -> dict[str, Any] | None:
    """Everything an offline check of one row needs. Another tenant's id is simply not found."""
    row = await conn.fetchrow(
        f"SELECT {_PROOF_COLUMNS} FROM audit_logs WHERE id = $1 AND tenant_id = $2", record_id, tenant
    )
    if row is None:
        return None
    key = await conn.fetchrow(
        "SELECT key_id, public_key, algorithm, valid_from, valid_until FROM signing_keys WHERE key_id = $1",
        row["signing_key_id"],
    )
    canonical = stored_canonical_bytes(row)
    prev, stored = bytes(row["prev_hash"]), bytes(row["row_hash"])
    return {
        "record_id": row["id"],
        "tenant_id": tenant,
        "event_id": row["event_id"],
        "chain_seq": row["chain_seq"],
        "hash_version": row["hash_version"],
        "canonical_bytes": b64(canonical),
        "canonical_json": canonical.decode(),
        "prev_hash": prev.hex(),
        "row_hash": stored.hex(),
        "signature": b64(bytes(row["signature"])),
        "signing_key": None if key is None else {
            "key_id": key["key_id"],
            "algorithm": key["algorithm"],
            "public_key": b64(bytes(key["public_key"])),
            "valid_from": iso(key["valid_from"]),
            "valid_until": iso(key["valid_until"]),
        },
        "checkpoint": await latest_checkpoint(conn, tenant, row["chain_seq"]),
        "witness": await witness_entry(conn, tenant, row["chain_seq"], witness),
        "algorithm": {
            "row_hash": "SHA-256(domain_tag || prev_hash || canonical_bytes)",
            "domain_tag": b64(domain_tag(row["hash_version"])),
            "signature": "Ed25519 over row_hash, by signing_key.public_key",
            "key_id": "first 16 bytes of SHA-256(public_key), hex",
            "canonical_bytes": f"RFC 8785 JSON of the row's hashed columns (hash version {row['hash_version']}; "
            f"new rows: {HASH_VERSION})",
            "checkpoint": "Ed25519 over checkpoint.message (domain tag || RFC 8785 JSON of tenant_id, chain_seq, "
            "head_hash, created_at, key_id); head_hash is the row hash at checkpoint.chain_seq, which the rows "
            "after this one link to through their prev_hash",
        },
        "server_check": {"row_hash_matches": row_hash(prev, canonical, row["hash_version"]) == stored},
    }


async def chain_status(conn: asyncpg.Connection, tenant: str, witness: Witness | None = None) -> list[dict[str, Any]]:
    row = await conn.fetchrow(
        "SELECT h.head_seq, h.updated_at AS head_updated_at, s.verified_seq, s.status, s.break_seq, s.break_kind,"
        " s.break_detail, s.checked_at, s.last_full_pass_at, s.rescan_seq"
        " FROM (SELECT $1::text AS tenant_id) t"
        " LEFT JOIN chain_heads h USING (tenant_id) LEFT JOIN report_chain_status s USING (tenant_id)",
        tenant,
    )
    assert row is not None
    head = row["head_seq"] or 0
    if head == 0:
        status = "empty"
    elif row["status"] is None:
        status = "unverified"
    elif row["status"] == "ok" and (row["verified_seq"] or 0) < head:
        status = "pending"  # rows arrived since the last pass
    else:
        status = row["status"]
    return [{
        "tenant_id": tenant,
        "head_seq": head,
        "head_updated_at": iso(row["head_updated_at"]),
        "last_verified_seq": row["verified_seq"] or 0,
        "status": status,
        "checked_at": iso(row["checked_at"]),
        "rescan": {"position": row["rescan_seq"] or 0, "last_full_pass_at": iso(row["last_full_pass_at"])},
        "break": None if row["break_seq"] is None else {
            "seq": row["break_seq"], "kind": row["break_kind"], "detail": row["break_detail"],
        },
        # The witness entry covering the last verified row; rows after published_through_seq await one.
        "witness": await witness_entry(conn, tenant, max(1, row["verified_seq"] or 0), witness),
    }]


async def signing_keys(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT key_id, public_key, algorithm, valid_from, valid_until, created_at FROM signing_keys"
        " ORDER BY valid_from, key_id"
    )
    return [
        {
            "key_id": row["key_id"],
            "algorithm": row["algorithm"],
            "public_key": b64(bytes(row["public_key"])),
            "valid_from": iso(row["valid_from"]),
            "valid_until": iso(row["valid_until"]),
            "created_at": iso(row["created_at"]),
        }
        for row in rows
    ]
