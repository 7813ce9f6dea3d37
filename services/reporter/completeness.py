# ruff: noqa: S608 - SQL is assembled only from this module's constants; every value is a bind parameter.
"""Completeness: which events a Claude Code session numbered but never reached the signed record.

Claude Code numbers the events of a session 0, 1, 2, ... (``event.sequence``, the ``event_sequence`` column).
Everything here is computed from the signed rows of ``audit_logs`` alone, at the moment of the query, so a
late arrival closes its gap as soon as it is signed and an auditor can recompute every figure from the
rows (docs/auditing.md, "Completeness", is the definition this module implements):

- a session's numbered rows are its rows with ``event_sequence >= 0``;
- expected: sequence numbers 0 to the highest one received (what came after it cannot be known);
- received: the distinct sequence numbers among the numbered rows;
- missing: expected minus received, as inclusive ranges;
- sequence conflicts: sequence numbers whose rows carry ``sequence_conflict`` (the signer sets it on every
  row of a session and sequence that a second, different event claims; migration 0760);
- duplicates: sequence numbers held by more than one row none of which is flagged (the signer flags every
  such group, so one is a missing flag, which verification reports); a client retry of the same event is
  deduplicated before signing and never shows;
- completeness: received / expected, summed over sessions for a tenant or a user.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

# Longest lists in one answer; beyond them the answer says it was truncated (counts stay exact).
MAX_MISSING_RANGES = 1_000
MAX_DUPLICATES = 1_000
MAX_SEQUENCE_CONFLICTS = 1_000

# The session's user, for per-user figures: the user key (e-mail, else user.id) of its numbered row signed
# first (lowest chain_seq) among those that carry one.
_SESSION_USER = (
    "(array_agg(coalesce(a.user_email, a.user_id) ORDER BY a.chain_seq)"
    " FILTER (WHERE coalesce(a.user_email, a.user_id) IS NOT NULL))[1]"
)



def missing_ranges(sequences: Iterable[int]) -> list[tuple[int, int]]:
    """Inclusive ranges of 0..max(sequences) that ``sequences`` (sorted, distinct, >= 0) does not hold."""
    ranges: list[tuple[int, int]] = []
    expected_next = 0
    for sequence in sequences:
        if sequence > expected_next:
            ranges.append((expected_next, sequence - 1))
        expected_next = sequence + 1
    return ranges


def ratio(received: int, expected: int) -> float | None:
    return None if expected == 0 else received / expected


# Per group of numbered rows: plain duplicate rows (unflagged rows beyond one per sequence number among the
# unflagged rows), the sequence numbers with a flagged row, and the flagged rows.
_CLAIMS = (
    "count(*) FILTER (WHERE NOT {a}sequence_conflict)"
    " - count(DISTINCT {a}event_sequence) FILTER (WHERE NOT {a}sequence_conflict) AS duplicate_rows,"
    " count(DISTINCT {a}event_sequence) FILTER (WHERE {a}sequence_conflict) AS sequence_conflicts,"
    " count(*) FILTER (WHERE {a}sequence_conflict) AS sequence_conflict_rows"
)
_CLAIM_FIGURES = ("duplicate_rows", "sequence_conflicts", "sequence_conflict_rows")


def _summary(expected: int, received: int, claims: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "expected": expected,
        "received": received,
        "missing": expected - received,
        **{name: claims[name] for name in _CLAIM_FIGURES},
        "completeness": ratio(received, expected),
    }


async def session(conn: asyncpg.Connection, tenant: str, session_id: str) -> dict[str, Any]:
    """The full completeness report of one session."""
    rows = await conn.fetch(
        "SELECT event_sequence AS sequence, count(*) AS rows,"
        " count(*) FILTER (WHERE NOT sequence_conflict) AS plain_rows FROM audit_logs"
        " WHERE tenant_id = $1 AND session_id = $2 AND event_sequence >= 0 GROUP BY 1 ORDER BY 1",
        tenant, session_id,
    )
    others = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE event_sequence IS NULL) AS unnumbered,"
        " count(*) FILTER (WHERE event_sequence < 0) AS out_of_range"
        " FROM audit_logs WHERE tenant_id = $1 AND session_id = $2",
        tenant, session_id,
    )
    sequences = [row["sequence"] for row in rows]
    gaps = missing_ranges(sequences)
    duplicates = [{"sequence": row["sequence"], "rows": row["plain_rows"]} for row in rows if row["plain_rows"] > 1]
    conflicts = [row["sequence"] for row in rows if row["plain_rows"] < row["rows"]]
    expected = sequences[-1] + 1 if sequences else 0
    claims = {
        "duplicate_rows": sum(row["plain_rows"] - 1 for row in rows if row["plain_rows"]),
        "sequence_conflicts": len(conflicts),
        "sequence_conflict_rows": sum(row["rows"] - row["plain_rows"] for row in rows),
    }
    return {
        "numbered": bool(sequences),
        "expected_range": [0, sequences[-1]] if sequences else None,
        **_summary(expected, len(sequences), claims),
        "missing_ranges": [[first, last] for first, last in gaps[:MAX_MISSING_RANGES]],
        "duplicates": duplicates[:MAX_DUPLICATES],
        # Here the numbers themselves (the figures elsewhere count them); the session summary lists each one's
        # rows with their proofs.
        "sequence_conflicts": conflicts[:MAX_SEQUENCE_CONFLICTS],
        "unnumbered_rows": others["unnumbered"] if others else 0,
        "out_of_range_rows": others["out_of_range"] if others else 0,
        "truncated": {"missing_ranges": len(gaps) > MAX_MISSING_RANGES,
                      "duplicates": len(duplicates) > MAX_DUPLICATES,
                      "sequence_conflicts": len(conflicts) > MAX_SEQUENCE_CONFLICTS},
    }


async def sessions(conn: asyncpg.Connection, tenant: str, session_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The figures (no lists) of several sessions at once, for a page of sessions or of the feed."""
    if not session_ids:
        return {}
    rows = await conn.fetch(
        "SELECT session_id, max(event_sequence) + 1 AS expected, count(DISTINCT event_sequence) AS received, "
        + _CLAIMS.format(a="") + " FROM audit_logs"
        " WHERE tenant_id = $1 AND session_id = ANY($2::text[]) AND event_sequence >= 0 GROUP BY session_id",
        tenant, list(dict.fromkeys(session_ids)),
    )
    return {row["session_id"]: _summary(row["expected"], row["received"], dict(row)) for row in rows}


_WINDOW = f"""
WITH touched AS (
    SELECT DISTINCT session_id FROM audit_logs
    WHERE tenant_id = $1 AND event_time >= $2 AND event_time < $3 AND session_id IS NOT NULL
      AND event_sequence >= 0
), per_session AS (
    SELECT a.session_id, coalesce({_SESSION_USER}, '') AS user_key,
           max(a.event_sequence) + 1 AS expected, count(DISTINCT a.event_sequence) AS received,
           {_CLAIMS.format(a="a.")}
    FROM audit_logs a JOIN touched t ON t.session_id = a.session_id
    WHERE a.tenant_id = $1 AND a.event_sequence >= 0
    GROUP BY a.session_id
)
SELECT user_key, count(*) AS sessions, count(*) FILTER (WHERE received < expected) AS sessions_with_gaps,
       sum(expected)::bigint AS expected, sum(received)::bigint AS received,
       sum(duplicate_rows)::bigint AS duplicate_rows, sum(sequence_conflicts)::bigint AS sequence_conflicts,
       sum(sequence_conflict_rows)::bigint AS sequence_conflict_rows
FROM per_session GROUP BY user_key
"""


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "sessions": row["sessions"],
        "sessions_with_gaps": row["sessions_with_gaps"],
        **_summary(row["expected"], row["received"], row),
    }


async def window(conn: asyncpg.Connection, tenant: str, since: datetime, until: datetime, *, limit: int,
                 offset: int) -> dict[str, Any]:
    """Per-tenant and per-user completeness over the sessions with a numbered row in [since, until).

    Users are ordered by missing events, most first, then by key; ``limit``/``offset`` page through them.
    """
    rows = [dict(row) for row in await conn.fetch(_WINDOW, tenant, since, until)]
    totals = {key: sum(row[key] for row in rows)
              for key in ("sessions", "sessions_with_gaps", "expected", "received", *_CLAIM_FIGURES)}
    rows.sort(key=lambda row: (-(row["expected"] - row["received"]), row["user_key"]))
    page = rows[offset:offset + limit]
    following = offset + limit if offset + limit < len(rows) else None
    return {
        "tenant": _figures(totals),
        "users": [{"user": row["user_key"] or None, **_figures(row)} for row in page],
        "total_users": len(rows),
        "offset": offset,
        "next_offset": following,
    }
