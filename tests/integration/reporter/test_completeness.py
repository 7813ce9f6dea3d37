"""Completeness from the signed rows, on a real PostgreSQL and through the reporter's API and portal:
sessions with planted gaps, sequence conflicts (different events claiming one number, flagged by the signer)
told apart from plain duplicates (unflagged rows sharing a number), unnumbered events and late arrivals."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.reporter import completeness
from shared.canonical import CanonicalEvent
from shared.keys import Ed25519Signer
from tests.integration.reporter.conftest import Reporter
from tests.integration.reporter.scenario import ORG_A, TENANT_A, append

START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
GAPPY, COMPLETE, UNNUMBERED = "sess-gappy", "sess-complete", "sess-cowork"
ALICE, BOB = "alice@acme.example", "bob-device"
_ids = itertools.count()


def ev(session: str, sequence: int | None, *, user_email: str | None = None, user_id: str | None = None,
       event_type: str = "api_request", seconds: int | None = None) -> CanonicalEvent:
    n = next(_ids)
    return CanonicalEvent(
        event_id=f"{session}-{sequence}-{event_type}-{n}", tenant_id=TENANT_A, org_id=ORG_A, license_id="lic",
        plane="claude_code", event_type=event_type,
        event_time=START + timedelta(seconds=seconds if seconds is not None else (sequence or 0)),
        received_at=START + timedelta(seconds=100), session_id=session, event_sequence=sequence,
        user_email=user_email, user_id=user_id, service_name="claude-code",
    )


def planted() -> list[CanonicalEvent]:
    # Alice's session: 0..11 sent; 3, 4 and 7 lost so far, 10 never arrives; 5 claimed by two different events.
    gappy = [ev(GAPPY, s, user_email=ALICE) for s in (0, 1, 2, 5, 6, 8, 9, 11)]
    gappy.append(ev(GAPPY, 5, user_email=ALICE, event_type="tool_decision"))
    # Bob's session is whole; Cowork-like events carry no sequence number and are not counted.
    whole = [ev(COMPLETE, s, user_id=BOB) for s in range(5)]
    cowork = [ev(UNNUMBERED, None, user_email=ALICE), ev(UNNUMBERED, None, user_email=ALICE)]
    return gappy + whole + cowork


async def _seed(db: asyncpg.Connection) -> Ed25519Signer:
    signer = Ed25519Signer.generate()
    await append(db, signer, planted())
    return signer


def test_missing_ranges_are_compressed() -> None:
    assert completeness.missing_ranges([]) == []
    assert completeness.missing_ranges([0, 1, 2]) == []
    assert completeness.missing_ranges([2, 3, 7, 9]) == [(0, 1), (4, 6), (8, 8)]


async def _strip_conflict_flags(db: asyncpg.Connection, session: str) -> None:
    """Clear a session's sequence_conflict flags as a database superuser would, past the append-only triggers:
    its shared numbers then show as plain duplicates (and verification reports the rows as modified)."""
    await db.execute("ALTER TABLE audit_logs DISABLE TRIGGER USER")
    try:
        await db.execute("UPDATE audit_logs SET sequence_conflict = false WHERE tenant_id = $1 AND session_id = $2",
                         TENANT_A, session)
    finally:
        await db.execute("ALTER TABLE audit_logs ENABLE TRIGGER USER")


async def test_a_session_report_names_its_gaps_conflicts_and_unnumbered_rows(db: asyncpg.Connection) -> None:
    await _seed(db)
    report = await completeness.session(db, TENANT_A, GAPPY)
    assert report["expected_range"] == [0, 11]
    assert (report["expected"], report["received"], report["missing"]) == (12, 8, 4)
    assert report["missing_ranges"] == [[3, 4], [7, 7], [10, 10]]
    # 5 is claimed by two different events: the signer flagged both rows, a conflict, not a plain duplicate.
    assert report["sequence_conflicts"] == [5] and report["sequence_conflict_rows"] == 2
    assert report["duplicates"] == [] and report["duplicate_rows"] == 0
    assert report["completeness"] == 8 / 12
    whole = await completeness.session(db, TENANT_A, COMPLETE)
    assert (whole["missing"], whole["missing_ranges"], whole["duplicates"], whole["sequence_conflicts"]) == (0, [], [], [])
    unnumbered = await completeness.session(db, TENANT_A, UNNUMBERED)
    assert unnumbered["numbered"] is False and unnumbered["expected_range"] is None
    assert unnumbered["unnumbered_rows"] == 2 and unnumbered["completeness"] is None


async def test_unflagged_rows_sharing_a_number_are_plain_duplicates_apart_from_conflicts(
    db: asyncpg.Connection,
) -> None:
    signer = await _seed(db)
    # A third claimant of 5 (flagged with the others) and two different events on 8 whose flags are then
    # stripped: 5 stays a conflict of three rows, 8 is a plain duplicate.
    extra = [ev(GAPPY, 5, user_email=ALICE, event_type="tool_result"), ev(GAPPY, 8, user_email=ALICE,
                                                                          event_type="tool_result")]
    await append(db, signer, extra, first_offset=len(planted()))
    await db.execute("ALTER TABLE audit_logs DISABLE TRIGGER USER")
    try:
        await db.execute("UPDATE audit_logs SET sequence_conflict = false WHERE tenant_id = $1 AND session_id = $2"
                         " AND event_sequence = 8", TENANT_A, GAPPY)
    finally:
        await db.execute("ALTER TABLE audit_logs ENABLE TRIGGER USER")
    report = await completeness.session(db, TENANT_A, GAPPY)
    assert (report["sequence_conflicts"], report["sequence_conflict_rows"]) == ([5], 3)
    assert (report["duplicates"], report["duplicate_rows"]) == ([{"sequence": 8, "rows": 2}], 1)
    assert (report["received"], report["missing"]) == (8, 4)  # every claimant counts once
    figures = (await completeness.sessions(db, TENANT_A, [GAPPY]))[GAPPY]
    assert {name: figures[name] for name in ("sequence_conflicts", "sequence_conflict_rows", "duplicate_rows")} == {
        "sequence_conflicts": 1, "sequence_conflict_rows": 3, "duplicate_rows": 1}
    day = START.replace(hour=0, minute=0, second=0)
    window = await completeness.window(db, TENANT_A, day, day + timedelta(days=2), limit=10, offset=0)
    alice = next(u for u in window["users"] if u["user"] == ALICE)
    assert (alice["sequence_conflicts"], alice["sequence_conflict_rows"], alice["duplicate_rows"]) == (1, 3, 1)
    assert (window["tenant"]["sequence_conflicts"], window["tenant"]["duplicate_rows"]) == (1, 1)
    await _strip_conflict_flags(db, GAPPY)  # no flag left: both numbers are plain duplicates
    report = await completeness.session(db, TENANT_A, GAPPY)
    assert report["sequence_conflicts"] == [] and report["duplicate_rows"] == 3
    assert report["duplicates"] == [{"sequence": 5, "rows": 3}, {"sequence": 8, "rows": 2}]


async def test_late_arrivals_close_gaps(db: asyncpg.Connection) -> None:
    signer = await _seed(db)
    # 3, 4 and 7 arrive late (a client's retry after an outage), signed after everything else.
    late = [ev(GAPPY, s, user_email=ALICE, seconds=3600 + s) for s in (3, 4, 7)]
    await append(db, signer, late, first_offset=len(planted()))
    report = await completeness.session(db, TENANT_A, GAPPY)
    assert report["missing_ranges"] == [[10, 10]]
    assert (report["received"], report["missing"]) == (11, 1)


async def test_tenant_and_user_figures_over_a_window(db: asyncpg.Connection) -> None:
    await _seed(db)
    day = START.replace(hour=0, minute=0, second=0)
    report = await completeness.window(db, TENANT_A, day, day + timedelta(days=2), limit=10, offset=0)
    assert report["tenant"] == {"sessions": 2, "sessions_with_gaps": 1, "expected": 17, "received": 13,
                                "missing": 4, "duplicate_rows": 0, "sequence_conflicts": 1,
                                "sequence_conflict_rows": 2, "completeness": 13 / 17}
    by_user = {u["user"]: u for u in report["users"]}
    assert [u["user"] for u in report["users"]] == [ALICE, BOB]  # most missing first
    assert (by_user[ALICE]["expected"], by_user[ALICE]["received"], by_user[ALICE]["missing"]) == (12, 8, 4)
    assert (by_user[ALICE]["sequence_conflicts"], by_user[ALICE]["duplicate_rows"]) == (1, 0)
    assert by_user[BOB]["completeness"] == 1.0 and by_user[BOB]["sequence_conflicts"] == 0
    # A window with none of the sessions' events counts nothing.
    empty = await completeness.window(db, TENANT_A, day - timedelta(days=9), day - timedelta(days=8),
                                      limit=10, offset=0)
    assert empty["tenant"]["sessions"] == 0 and empty["tenant"]["completeness"] is None


async def _get(reporter: Reporter, path: str) -> Any:
    response = await reporter.client.get(path, headers=reporter.tenant_a)
    assert response.status_code == 200, response.text
    return response.json() if path.startswith("/api/") else response.text


async def test_the_api_and_portal_show_completeness(db: asyncpg.Connection, reporter: Reporter) -> None:
    await _seed(db)
    summary = await _get(reporter, f"/api/v1/sessions/{GAPPY}")
    assert summary["completeness"]["missing_ranges"] == [[3, 4], [7, 7], [10, 10]]
    assert summary["completeness"]["sequence_conflicts"] == [5] and summary["completeness"]["duplicates"] == []
    assert [group["sequence"] for group in summary["sequence_conflicts"]] == [5]  # its rows, with their proofs
    sessions = await _get(reporter, "/api/v1/sessions")
    figures = {item["session_id"]: item["completeness"] for item in sessions["items"]}
    assert figures[GAPPY]["missing"] == 4 and figures[COMPLETE]["missing"] == 0
    assert figures[UNNUMBERED] is None
    assert (figures[GAPPY]["sequence_conflicts"], figures[GAPPY]["duplicate_rows"]) == (1, 0)
    feed = await _get(reporter, f"/api/v1/audit/events?session={GAPPY}")
    assert feed["session_completeness"][GAPPY]["missing"] == 4
    window = await _get(reporter, "/api/v1/completeness")
    assert window["tenant"]["expected"] == 17 and window["tenant"]["received"] == 13
    assert window["users"][0]["user"] == ALICE and window["next_offset"] is None
    assert (window["tenant"]["sequence_conflicts"], window["users"][0]["sequence_conflicts"]) == (1, 1)
    paged = await _get(reporter, "/api/v1/completeness?limit=1")
    assert [u["user"] for u in paged["users"]] == [ALICE] and paged["next_offset"] == 1
    bad = await reporter.client.get("/api/v1/completeness?since=2026-02-01&until=2026-01-01",
                                    headers=reporter.tenant_a)
    assert bad.status_code == 400
    # The portal shows the same.
    session_page = await _get(reporter, f"/portal/sessions/{GAPPY}")
    assert 'id="completeness-missing">4<' in session_page and "3\u20134, 7, 10" in session_page
    assert 'id="completeness-conflicts">1<' in session_page and 'id="completeness-duplicates">0<' in session_page
    assert "4 missing" in await _get(reporter, "/portal/sessions")
    assert "1 conflict<" in await _get(reporter, "/portal/sessions")
    assert "4 missing" in await _get(reporter, f"/portal/events?session={GAPPY}")
    portal_window = await _get(reporter, "/portal/completeness")
    assert 'id="tenant-missing">4<' in portal_window and 'id="tenant-conflicts">1<' in portal_window
    # The OpenAPI document the reporter serves documents the endpoint.
    document = (await reporter.client.get("/openapi.json")).json()
    assert "/api/v1/completeness" in document["paths"]
    assert "completeness" in document["components"]["schemas"]["SessionSummary"]["properties"]
    schemas = document["components"]["schemas"]
    assert schemas["SessionCompleteness"]["properties"]["sequence_conflicts"]["type"] == "array"
    assert schemas["SessionCompletenessFigures"]["properties"]["sequence_conflicts"]["type"] == "integer"
