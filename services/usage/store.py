# ruff: noqa: S608 - table and column names come from this package's constants; values are bind parameters.
"""Writes usage points, in one transaction per batch: the points, the series states and the daily sums.

Idempotent: a point is keyed by (tenant, series, timestamp), and only points actually inserted add to the
daily sums, so a batch delivered twice (the consumer crashed after the commit to PostgreSQL and before the
one to Kafka) changes nothing the second time. Series states are locked while a batch derives deltas from
them, so two consumers of the same series (a zombie after a rebalance) cannot count an increase twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from services.usage.points import CUMULATIVE, SeriesState, UsagePoint, cumulative_delta
from shared import usage_cumulative as cumulative
from shared.usage_columns import DAILY_COLUMN, DAILY_COLUMNS, MODEL_COLUMNS


@dataclass(frozen=True)
class TenantPoints:
    """Points of one raw message, with the tenant and org the receiver took from the licence."""

    tenant: str
    org: str
    points: Sequence[UsagePoint]


@dataclass
class WriteStats:
    inserted: int = 0
    duplicates: int = 0
    counted: int = 0
    by_metric: dict[str, float] = field(default_factory=dict)


def day_of(time_ns: int) -> date:
    return datetime.fromtimestamp(time_ns / 1e9, UTC).date()


async def _add_sums(conn: asyncpg.Connection, table: str, keys: tuple[str, ...], key_types: tuple[str, ...],
                    columns: tuple[str, ...], tenant: str, sums: Mapping[tuple[Any, ...], Mapping[str, float]]) -> None:
    """Adds ``sums`` to ``table``'s rows of the same key (one statement, whatever the number of rows)."""
    ordered = sorted(sums)
    names = (*keys, *columns)
    arrays = [[key[i] for key in ordered] for i in range(len(keys))] + [[sums[key][c] for key in ordered]
                                                                          for c in columns]
    unnest = ", ".join(f"${i + 2}::{t}[]" for i, t in enumerate((*key_types, *("float8",) * len(columns))))
    await conn.execute(
        f"INSERT INTO {table} (tenant_id, {', '.join(names)}) SELECT $1, {', '.join(names)}"
        f" FROM unnest({unnest}) AS x({', '.join(names)})"
        f" ON CONFLICT (tenant_id, {', '.join(keys)}) DO UPDATE SET "
        + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in columns),
        tenant, *arrays,
    )


async def _load_states(conn: asyncpg.Connection, tenant: str, series: list[str]) -> dict[str, SeriesState]:
    rows = await conn.fetch(
        "SELECT series_id, start_time_ns, last_time_ns, last_value FROM usage_series"
        " WHERE tenant_id = $1 AND series_id = ANY($2::text[]) ORDER BY series_id FOR UPDATE",
        tenant, series,
    )
    return {row["series_id"]: SeriesState(row["start_time_ns"], row["last_time_ns"], row["last_value"]) for row in rows}


async def write_points(conn: asyncpg.Connection, batch: Sequence[TenantPoints]) -> WriteStats:
    stats = WriteStats()
    async with conn.transaction():
        for tenant in sorted({item.tenant for item in batch}):
            await _write_tenant(conn, tenant, [(item.org, p) for item in batch if item.tenant == tenant
                                               for p in item.points], stats)
    return stats


async def _write_tenant(conn: asyncpg.Connection, tenant: str, points: list[tuple[str, UsagePoint]],
                        stats: WriteStats) -> None:
    if not points:
        return
    cumulative_series = sorted({p.series_id for _, p in points if p.temporality == CUMULATIVE})
    states = await _load_states(conn, tenant, cumulative_series) if cumulative_series else {}
    before = dict(states)
    metric_of: dict[str, str] = {}
    # Time order within each series, so deltas are derived run by run.
    ordered = sorted(points, key=lambda item: (item[1].series_id, item[1].time_ns))
    deltas: list[float] = []
    for _, point in ordered:
        if point.temporality == CUMULATIVE:
            delta, state = cumulative_delta(states.get(point.series_id), point.start_ns, point.time_ns, point.value)
            if state is not None:
                states[point.series_id] = state
                metric_of[point.series_id] = point.metric
        else:
            delta = point.value
        deltas.append(delta)

    inserted = await conn.fetch(
        "INSERT INTO usage_points (tenant_id, series_id, time_ns, org_id, metric, temporality, start_time_ns,"
        " point_time, value, delta, user_key, user_id, user_email, session_id, model, kind, tool_name, attributes)"
        " SELECT $1, s, t, o, m, tp, st, to_timestamp(t / 1e9), v, d, uk, ui, ue, si, mo, k, tn, a::jsonb"
        " FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[],"
        " $8::float8[], $9::float8[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],"
        " $16::text[], $17::text[]) AS u(s, t, o, m, tp, st, v, d, uk, ui, ue, si, mo, k, tn, a)"
        " ON CONFLICT (tenant_id, series_id, time_ns) DO NOTHING RETURNING series_id, time_ns",
        tenant,
        [p.series_id for _, p in ordered], [p.time_ns for _, p in ordered], [org for org, _ in ordered],
        [p.metric for _, p in ordered], [p.temporality for _, p in ordered], [p.start_ns for _, p in ordered],
        [p.value for _, p in ordered], deltas, [p.user_key for _, p in ordered], [p.user_id for _, p in ordered],
        [p.user_email for _, p in ordered], [p.session_id for _, p in ordered], [p.model for _, p in ordered],
        [p.kind for _, p in ordered], [p.tool_name for _, p in ordered],
        [json.dumps(p.attributes, sort_keys=True, default=str) for _, p in ordered],
    )
    fresh = {(row["series_id"], row["time_ns"]) for row in inserted}
    stats.inserted += len(inserted)
    stats.duplicates += len(ordered) - len(inserted)

    daily: dict[tuple[date, str, str], dict[str, float]] = {}
    by_model: dict[tuple[date, str], dict[str, float]] = {}
    for (_, point), delta in zip(ordered, deltas, strict=True):
        if (point.series_id, point.time_ns) not in fresh:
            continue
        # Counted once even if the same point came twice in this batch (the insert kept one).
        fresh.discard((point.series_id, point.time_ns))
        column = DAILY_COLUMN.get((point.metric, point.kind))
        if delta == 0 or column is None:
            continue
        day = day_of(point.time_ns)
        sums = daily.setdefault((day, point.user_key, point.session_id), dict.fromkeys(DAILY_COLUMNS, 0.0))
        sums[column] += delta
        sums["m_points"] += 1
        model_column = column.removeprefix("m_")
        if point.model and model_column in MODEL_COLUMNS:
            model_sums = by_model.setdefault((day, point.model), dict.fromkeys(MODEL_COLUMNS, 0.0))
            model_sums[model_column] += delta
        stats.counted += 1
        stats.by_metric[point.metric] = stats.by_metric.get(point.metric, 0.0) + delta
    if daily:
        await _add_sums(conn, "report_usage_daily", ("day", "user_key", "session_id"), ("date", "text", "text"),
                        DAILY_COLUMNS, tenant, daily)
        per_user_day: dict[tuple[str, date], dict[str, float]] = {}
        days_by_user: dict[str, list[date]] = {}
        for (day, user, _), sums in daily.items():
            totals = per_user_day.setdefault((user, day), dict.fromkeys(DAILY_COLUMNS, 0.0))
            for column, value in sums.items():
                totals[column] += value
            days_by_user.setdefault(user, []).append(day)
        await cumulative.add(conn, "usage_metric_cumulative", tenant, DAILY_COLUMNS,
                             dict.fromkeys(DAILY_COLUMNS, "float8"), per_user_day)
        await cumulative.note_users(conn, tenant, days_by_user)
    if by_model:
        await _add_sums(conn, "usage_metric_model_daily", ("day", "model"), ("date", "text"), MODEL_COLUMNS,
                        tenant, by_model)
    changed = sorted(series for series, state in states.items() if before.get(series) != state)
    if changed:
        await conn.execute(
            "INSERT INTO usage_series (tenant_id, series_id, metric, start_time_ns, last_time_ns, last_value)"
            " SELECT $1, s, m, st, lt, lv FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[],"
            " $6::float8[]) AS x(s, m, st, lt, lv)"
            " ON CONFLICT (tenant_id, series_id) DO UPDATE SET start_time_ns = excluded.start_time_ns,"
            " last_time_ns = excluded.last_time_ns, last_value = excluded.last_value, updated_at = now()",
            tenant, changed, [metric_of[s] for s in changed], [states[s].start_ns for s in changed],
            [states[s].last_time_ns for s in changed], [states[s].last_value for s in changed],
        )
