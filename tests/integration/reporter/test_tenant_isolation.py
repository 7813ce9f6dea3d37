"""Tenant A can never read tenant B's rows, through any endpoint or page, even by guessing ids or cursors."""

from __future__ import annotations

import asyncpg

from services.reporter.params import Cursor
from tests.integration.reporter.conftest import Reporter
from tests.integration.reporter.scenario import (
    CAROL,
    ORG_B,
    SECRET_B,
    SESSION_1,
    SESSION_B,
    TENANT_A,
    TENANT_B,
    seed,
)

API = "/api/v1"
B_MARKERS = (SECRET_B, CAROL, SESSION_B, TENANT_B, ORG_B, "carol-device", "9.000000")


def _clean(text: str, asked: str = "") -> None:
    """No marker of tenant B's data, apart from what the request itself named (a page echoes its filters)."""
    leaked = [marker for marker in B_MARKERS if marker in text and marker not in asked]
    assert not leaked, f"tenant B data in tenant A's answer: {leaked}"


async def test_every_endpoint_and_page_is_bound_to_the_licence_tenant(reporter: Reporter,
                                                                     db: asyncpg.Connection) -> None:
    scenario = await seed(db)
    b_rows = await db.fetch("SELECT id, event_time FROM audit_logs WHERE tenant_id = $1 ORDER BY id", TENANT_B)
    assert len(b_rows) == len(scenario.of_tenant(TENANT_B))
    since = scenario.start.date().isoformat()
    a = reporter.tenant_a
    broad = [
        f"{API}/audit/events?limit=500",
        f"{API}/audit/events?user={CAROL}",
        f"{API}/audit/events?session={SESSION_B}",
        f"{API}/audit/events?tool=Bash&decision=reject",
        f"{API}/sessions",
        f"{API}/sessions?user={CAROL}",
        f"{API}/usage?group_by=user&since={since}",
        f"{API}/usage?group_by=model&since={since}",
        f"{API}/usage?group_by=day&since={since}",
        f"{API}/audit/verify",
        "/portal/events",
        f"/portal/events?user={CAROL}",
        f"/portal/events?session={SESSION_B}",
        "/portal/sessions",
        f"/portal/usage?since={since}",
        "/portal/chain",
        f"/portal/sessions/{SESSION_1}",
    ]
    for path in broad:
        response = await reporter.client.get(path, headers=a)
        assert response.status_code == 200, (path, response.text[:300])
        _clean(response.text, asked=path)

    # Filters naming B's user or session find nothing, rather than B's rows.
    assert (await reporter.client.get(f"{API}/audit/events?session={SESSION_B}", headers=a)).json()["items"] == []
    assert (await reporter.client.get(f"{API}/sessions?user={CAROL}", headers=a)).json()["items"] == []

    # Guessing B's ids: every row id, the session id, in the API and the portal.
    for row in b_rows:
        response = await reporter.client.get(f"{API}/audit/records/{row['id']}/proof", headers=a)
        assert response.status_code == 404
        _clean(response.text)
    for path in (f"{API}/sessions/{SESSION_B}", f"/portal/sessions/{SESSION_B}"):
        response = await reporter.client.get(path, headers=a)
        assert response.status_code == 404, path
        _clean(response.text, asked=path)

    # A cursor forged from B's newest row still only pages through A's rows.
    forged = Cursor(b_rows[-1]["event_time"], b_rows[-1]["id"] + 1).encode()
    page = (await reporter.client.get(f"{API}/audit/events", params={"cursor": forged, "limit": "500"},
                                      headers=a)).json()
    assert page["items"] and {item["org_id"] for item in page["items"]} == {"acme"}
    _clean(str(page))

    usage = (await reporter.client.get(f"{API}/usage?group_by=user&since={since}", headers=a)).json()
    assert usage["totals"]["cost"] == "0.017850"
    assert [t["tenant_id"] for t in (await reporter.client.get(f"{API}/audit/verify", headers=a)).json()[
        "tenants"]] == [TENANT_A]


async def test_tenant_b_sees_only_its_own_rows(reporter: Reporter, db: asyncpg.Connection) -> None:
    await seed(db)
    b = reporter.tenant_b
    events = (await reporter.client.get(f"{API}/audit/events", headers=b)).json()["items"]
    assert {e["session_id"] for e in events} == {SESSION_B}
    sessions = (await reporter.client.get(f"{API}/sessions", headers=b)).json()["items"]
    assert [s["session_id"] for s in sessions] == [SESSION_B]
    assert (await reporter.client.get(f"{API}/sessions/{SESSION_1}", headers=b)).status_code == 404
