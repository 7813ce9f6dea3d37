# ruff: noqa: S608 - SQL is assembled only from this module's constants; every value is a bind parameter.
"""Usage reports: the aggregate queries over the rollups, and the one definition of each reported figure.

All reads are of rollups (0400_reporting.sql), never of audit_logs. Usage by user or day is one scan of
report_usage_daily (event figures and metric figures side by side), plus a count of active sessions from
report_sessions run concurrently on a second connection. Money leaves PostgreSQL as text with six
decimals, so there is no Decimal arithmetic per group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.reporter.rollup import MODEL_COLUMNS, SUM_COLUMNS
from shared import usage_cumulative as cumulative
from shared.usage_columns import DAILY_COLUMNS
from shared.usage_columns import MODEL_COLUMNS as METRIC_MODEL_COLUMNS

GROUPINGS = ("user", "model", "day")
_DAYS = "tenant_id = $1 AND day >= $2 AND day < $3"
# Sessions active in the window, as the session list defines them: first event before its end, last event
# at or after its start. One row per session, so counting needs no DISTINCT over daily rows.
# Arguments: tenant, window start, window end.
_ACTIVE = "FROM report_sessions WHERE tenant_id = $1 AND last_event_time >= $2 AND first_event_time < $3"
TOKEN_TYPES = ("input", "output", "cache_read", "cache_creation")


def shape(column: str, expression: str) -> str:
    """``expression AS column``, typed as the report shows it, so Python only places values: money as text
    with six decimals, seconds to the millisecond, everything else (counts, tokens, lines) whole."""
    if column in ("cost", "m_cost"):
        return f"round(({expression})::numeric, 6)::text AS {column}"
    if column.startswith("m_active_"):
        return f"round(({expression})::numeric, 3)::float8 AS {column}"
    return f"round({expression})::bigint AS {column}" if column.startswith("m_") else \
        f"({expression})::bigint AS {column}"


def _sums(columns: tuple[str, ...]) -> str:
    return ", ".join(shape(c, f"sum({c})") for c in columns)


_DAILY_SUMS = _sums((*SUM_COLUMNS, *DAILY_COLUMNS))


@dataclass(frozen=True)
class UsageQueries:
    """``events`` and ``metrics`` take (tenant, first day, end day); metric figures are prefixed ``m_``, and
    ``metrics`` is None where ``events`` yields them too. ``sessions`` takes (tenant, window start, window
    end), or is None where ``events`` counts sessions itself (days) or sessions are not a property of the
    group (models)."""

    events: str
    metrics: str | None
    sessions: str | None


def usage_queries(group_by: str) -> UsageQueries:
    if group_by == "user":
        # Running totals: two index look-ups per user, whatever the number of days (see shared/usage_cumulative.py).
        return UsageQueries(
            events=cumulative.window_query("report_usage_cumulative", SUM_COLUMNS, shape),
            metrics=cumulative.window_query("usage_metric_cumulative", DAILY_COLUMNS, shape),
            sessions=f"SELECT user_key AS key, count(*) AS sessions {_ACTIVE} GROUP BY 1",
        )
    if group_by == "day":
        # (day, session) is unique among rows with events: a session's rows all count for its user.
        return UsageQueries(
            events=f"SELECT day AS key, {_DAILY_SUMS},"
            f" count(*) FILTER (WHERE session_id <> '' AND events > 0) AS sessions"
            f" FROM report_usage_daily WHERE {_DAYS} GROUP BY 1",
            metrics=None,
            sessions=None,
        )
    if group_by == "model":
        metric_sums = ", ".join(shape(f"m_{c}", f"sum({c})") for c in METRIC_MODEL_COLUMNS)
        return UsageQueries(
            events=f"SELECT model AS key, {_sums(MODEL_COLUMNS)} FROM report_model_daily WHERE {_DAYS} GROUP BY 1",
            metrics=f"SELECT model AS key, {metric_sums}, count(*) AS m_points FROM usage_metric_model_daily"
            f" WHERE {_DAYS} GROUP BY 1",
            sessions=None,
        )
    raise ValueError(group_by)


TOTALS = f"SELECT {_DAILY_SUMS} FROM report_usage_daily WHERE {_DAYS}"
TOTAL_SESSIONS = f"SELECT count(*) {_ACTIVE}"
SESSION_FIGURES = f"SELECT {_sums(DAILY_COLUMNS)} FROM report_usage_daily WHERE tenant_id = $1 AND session_id = $2"
METRIC_MODEL_FIGURES = tuple(f"m_{c}" for c in METRIC_MODEL_COLUMNS)
ZERO_COST = "0.000000"


def _rate(accepted: int | float, rejected: int | float) -> float | None:
    decided = accepted + rejected
    return None if not decided else round(accepted / decided, 4)


def event_figures(row: Mapping[str, Any] | None, *, full: bool) -> dict[str, Any]:
    """The event figures of an aggregated rollup row. Per-model rows (``full=False``) have no prompts or
    tool decisions: those are None, not 0."""
    if row is None:
        row = _NO_EVENTS
    tokens = {"input": row["input_tokens"] or 0, "output": row["output_tokens"] or 0,
              "cache_read": row["cache_read_tokens"] or 0, "cache_creation": row["cache_creation_tokens"] or 0}
    tokens["total"] = tokens["input"] + tokens["output"] + tokens["cache_read"] + tokens["cache_creation"]
    figures = {
        "events": None, "prompts": None, "api_calls": row["api_calls"] or 0, "errors": row["api_errors"] or 0,
        "tool_calls": None, "tool_failures": None, "tool_decisions": None, "tool_acceptance_rate": None,
        "tokens": tokens, "cost": row["cost"] or ZERO_COST,
    }
    if full:
        accepts, rejects = row["tool_accepts"] or 0, row["tool_rejects"] or 0
        figures.update(events=row["events"] or 0, prompts=row["prompts"] or 0, tool_calls=row["tool_calls"] or 0,
                       tool_failures=row["tool_failures"] or 0,
                       tool_decisions={"accepted": accepts, "rejected": rejects},
                       tool_acceptance_rate=_rate(accepts, rejects))
    return figures


_NO_EVENTS: Mapping[str, Any] = dict.fromkeys(SUM_COLUMNS, 0)


def metric_figures(row: Mapping[str, Any] | None, columns: tuple[str, ...] = DAILY_COLUMNS) -> dict[str, Any] | None:
    """The figures only metrics carry, from ``m_*`` columns shaped by ``shape``; None when no metric point
    was counted for the group. Figures of a column the rows do not have (lines of code per model) are None."""
    if row is None or not row["m_points"]:
        return None
    if columns is not DAILY_COLUMNS:
        row = {c: (row[c] if c in columns else None) for c in DAILY_COLUMNS}
    tokens = {"input": row["m_input_tokens"] or 0, "output": row["m_output_tokens"] or 0,
              "cache_read": row["m_cache_read_tokens"] or 0, "cache_creation": row["m_cache_creation_tokens"] or 0}
    tokens["total"] = tokens["input"] + tokens["output"] + tokens["cache_read"] + tokens["cache_creation"]
    user, cli = row["m_active_user_seconds"], row["m_active_cli_seconds"]
    accepted, rejected = row["m_edit_accepts"], row["m_edit_rejects"]
    return {
        "cost": row["m_cost"] or ZERO_COST,
        "tokens": tokens,
        "sessions_started": row["m_sessions_started"],
        "lines_of_code": {"added": row["m_lines_added"], "removed": row["m_lines_removed"]},
        "commits": row["m_commits"],
        "pull_requests": row["m_pull_requests"],
        "active_time_seconds": {
            "user": None if user is None else round(user, 3),
            "cli": None if cli is None else round(cli, 3),
            "total": None if user is None or cli is None else round(user + cli, 3),
        },
        "code_edit_decisions": {
            "accepted": accepted,
            "rejected": rejected,
            "acceptance_rate": None if accepted is None or rejected is None else _rate(accepted, rejected),
        },
    }
