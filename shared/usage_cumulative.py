# ruff: noqa: S608 - table and column names come from this package's constants; values are bind parameters.
"""Running totals per user and day (report_usage_cumulative, usage_metric_cumulative; see 0400_reporting.sql).

Adding usage of day d: the user's row for d is created if missing, starting from the totals of the
user's last row before d; then the amount is added to the row of d and to every later row of the user.
Usage over days [a, b) is then (last row before b) - (last row before a), two index look-ups per user.

Both writers (the reporter's fold, the usage consumer) call ``add`` inside their own transaction, so the
totals move exactly when the figures they come from are committed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any

import asyncpg


async def add(conn: asyncpg.Connection, table: str, tenant: str, columns: Sequence[str],
              column_types: Mapping[str, str], amounts: Mapping[tuple[str, date], Mapping[str, Any]]) -> None:
    """Add ``amounts`` ({(user_key, day): {column: amount}}) to ``table``'s running totals."""
    if not amounts:
        return
    keys = sorted(amounts)  # one lock order for every writer
    users, days = [k[0] for k in keys], [k[1] for k in keys]
    await conn.execute(
        f"INSERT INTO {table} (tenant_id, user_key, day, {', '.join(columns)})"
        f" SELECT $1, x.u, x.d, {', '.join(f'coalesce(p.{c}, 0)' for c in columns)}"
        f" FROM unnest($2::text[], $3::date[]) AS x(u, d)"
        f" LEFT JOIN LATERAL (SELECT {', '.join(columns)} FROM {table} c WHERE c.tenant_id = $1"
        f" AND c.user_key = x.u AND c.day < x.d ORDER BY c.day DESC LIMIT 1) p ON true"
        f" ON CONFLICT (tenant_id, user_key, day) DO NOTHING",
        tenant, users, days,
    )
    arrays = [[amounts[k].get(c, 0) for k in keys] for c in columns]
    unnest = ", ".join(f"${i + 4}::{column_types[c]}[]" for i, c in enumerate(columns))
    await conn.execute(
        f"UPDATE {table} t SET {', '.join(f'{c} = t.{c} + a.{c}' for c in columns)}"
        f" FROM (SELECT r.user_key, r.day, {', '.join(f'sum(x.{c}) AS {c}' for c in columns)}"
        f" FROM unnest($2::text[], $3::date[], {unnest}) AS x(u, d, {', '.join(columns)})"
        f" JOIN {table} r ON r.tenant_id = $1 AND r.user_key = x.u AND r.day >= x.d"
        f" GROUP BY r.user_key, r.day) a"
        f" WHERE t.tenant_id = $1 AND t.user_key = a.user_key AND t.day = a.day",
        tenant, users, days, *arrays,
    )


async def note_users(conn: asyncpg.Connection, tenant: str, days_by_user: Mapping[str, Sequence[date]]) -> None:
    """Record the users (and the span of days they were active) that window queries start from."""
    if not days_by_user:
        return
    users = sorted(days_by_user)
    await conn.execute(
        "INSERT INTO report_users (tenant_id, user_key, first_day, last_day)"
        " SELECT $1, u, f, l FROM unnest($2::text[], $3::date[], $4::date[]) AS x(u, f, l)"
        " ON CONFLICT (tenant_id, user_key) DO UPDATE SET"
        " first_day = least(report_users.first_day, excluded.first_day),"
        " last_day = greatest(report_users.last_day, excluded.last_day)",
        tenant, users, [min(days_by_user[u]) for u in users], [max(days_by_user[u]) for u in users],
    )


def window_query(table: str, columns: Sequence[str], shape: Callable[[str, str], str]) -> str:
    """Per user active in days [$2, $3): the totals of those days, each ``shape(column, expression)``.
    Arguments: tenant, first day, end day."""
    return (
        f"SELECT u.user_key AS key, {', '.join(shape(c, f'e.{c} - coalesce(s.{c}, 0)') for c in columns)}"
        f" FROM report_users u"
        f" JOIN LATERAL (SELECT * FROM {table} c WHERE c.tenant_id = $1 AND c.user_key = u.user_key AND c.day < $3"
        f" ORDER BY c.day DESC LIMIT 1) e ON e.day >= $2"
        f" LEFT JOIN LATERAL (SELECT * FROM {table} c WHERE c.tenant_id = $1 AND c.user_key = u.user_key"
        f" AND c.day < $2 ORDER BY c.day DESC LIMIT 1) s ON true"
        f" WHERE u.tenant_id = $1 AND u.first_day < $3 AND u.last_day >= $2"
    )
