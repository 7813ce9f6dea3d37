"""Who may read what: every role against every endpoint and page (cross-tenant reads included), and what each
role sees inside the answers it may have. Real PostgreSQL, real signed chains, the real broker for the
access trail. None of these requests may answer 500."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from services.reporter.authz import RULES, find_rule, unguarded_routes
from shared.canonical import CanonicalEvent
from shared.reporting_tokens import ADMIN, ANALYST, AUDITOR, DEVELOPER
from tests.integration.reporter.conftest import Reporter
from tests.integration.reporter.scenario import (
    ALICE,
    CAROL,
    ORG_A,
    ORG_B,
    SECRET_B,
    SESSION_1,
    SESSION_2,
    SESSION_B,
    TENANT_A,
    TENANT_B,
    append,
    seed,
)

API = "/api/v1"
# The principals of the matrix. "developer" is Alice; "other_tenant" is an admin of tenant B reading tenant
# A's ids; "legacy_licence" a licence issued before reading needed tokens; "ingest_licence" a current one.
PRINCIPALS = ("admin", "auditor", "analyst", "developer", "other_tenant", "legacy_licence", "ingest_licence",
              "anonymous")
ALL = {ADMIN, AUDITOR, ANALYST, DEVELOPER}
STAFF = {ADMIN, AUDITOR}

# (method, path, roles that get 2xx). Every other role of the four gets 403; "other_tenant" is expected
# to get what an admin gets, except on tenant A's own ids, where it gets 404 ("cross" below).
MATRIX: list[tuple[str, str, set[str], bool]] = [
    # method, path, allowed roles, names one of tenant A's ids (a cross-tenant read for tenant B)
    ("GET", f"{API}/whoami", ALL, False),
    ("GET", f"{API}/audit/events", ALL, False),
    ("GET", f"{API}/audit/events?plane=access", ALL, False),
    ("GET", f"{API}/audit/records/{{record_a}}/proof", STAFF, True),
    ("GET", f"{API}/audit/consistency?first=1&second=2", STAFF, False),
    ("GET", f"{API}/audit/tree-heads", STAFF, False),
    ("GET", f"{API}/audit/verify", STAFF, False),
    ("GET", f"{API}/sessions", ALL, False),
    ("GET", f"{API}/sessions/{SESSION_1}", ALL, True),
    ("GET", f"{API}/usage?group_by=user", {ADMIN, AUDITOR, ANALYST}, False),
    ("GET", f"{API}/usage?group_by=model", {ADMIN, AUDITOR, ANALYST}, False),
    ("GET", f"{API}/completeness", {ADMIN, AUDITOR, ANALYST}, False),
    ("GET", f"{API}/signing-keys", STAFF, False),
    ("GET", f"{API}/tokens", {ADMIN}, False),
    ("POST", f"{API}/tokens", {ADMIN}, False),
    ("POST", f"{API}/tokens/{{token_a}}/revoke", {ADMIN}, True),
    ("GET", "/portal/events", ALL, False),
    ("GET", "/portal/sessions", ALL, False),
    ("GET", f"/portal/sessions/{SESSION_1}", ALL, True),
    ("GET", "/portal/usage", {ADMIN, AUDITOR, ANALYST}, False),
    ("GET", "/portal/completeness", {ADMIN, AUDITOR, ANALYST}, False),
    ("GET", "/portal/chain", STAFF, False),
    ("GET", "/portal/records/{record_a}/proof", STAFF, True),
    ("GET", "/portal/tokens", {ADMIN}, False),
    ("POST", "/portal/tokens", {ADMIN}, False),
    ("POST", "/portal/tokens/{token_a}/revoke", {ADMIN}, True),
]
PUBLIC = ["/healthz", "/readyz", "/openapi.json", "/static/portal.css", "/portal/login"]


async def _headers(reporter: Reporter) -> dict[str, dict[str, str]]:
    return {
        "admin": await reporter.bearer(ORG_A, TENANT_A, ADMIN),
        "auditor": await reporter.bearer(ORG_A, TENANT_A, AUDITOR),
        "analyst": await reporter.bearer(ORG_A, TENANT_A, ANALYST),
        "developer": await reporter.bearer(ORG_A, TENANT_A, DEVELOPER, ALICE),
        "other_tenant": await reporter.bearer(ORG_B, TENANT_B, ADMIN),
        "legacy_licence": reporter.legacy_licence(ORG_A, TENANT_A),
        "ingest_licence": reporter.licence(ORG_A, TENANT_A),
        "anonymous": {},
    }


def _expected(principal: str, method: str, path: str, allowed: set[str], cross: bool) -> set[int]:
    if principal == "anonymous":
        return {303} if path.startswith("/portal") and method == "GET" else {401}
    if principal == "ingest_licence":
        return {403}
    role = {"legacy_licence": AUDITOR, "other_tenant": ADMIN}.get(principal, principal)
    if role not in allowed:
        return {403}
    if path == "/portal/tokens/{token_a}/revoke":
        return {303}  # back to the list; another tenant's token is simply not found there
    if principal == "other_tenant" and cross:
        return {404}
    return {201} if (method, path) == ("POST", f"{API}/tokens") else {200}


async def test_the_whole_role_by_endpoint_matrix(reporter: Reporter, db: asyncpg.Connection) -> None:
    await seed(db)
    headers = await _headers(reporter)
    record_a = await db.fetchval("SELECT min(id) FROM audit_logs WHERE tenant_id = $1", TENANT_A)
    seen: list[tuple[str, str, str, int]] = []
    for principal in PRINCIPALS:
        for method, template, allowed, cross in MATRIX:
            token_a = (await reporter.client.post(f"{API}/tokens", json={"role": "analyst"},
                                                  headers=headers["admin"])).json()["token_id"]
            path = template.format(record_a=record_a, token_a=token_a)
            body: dict[str, Any] = {}
            if method == "POST" and path == f"{API}/tokens":
                body = {"json": {"role": "auditor"}}
            elif method == "POST" and path == "/portal/tokens":
                body = {"data": {"role": "auditor", "description": "matrix"}}
            response = await reporter.client.request(method, path, headers=headers[principal], **body)
            expected = _expected(principal, method, template, allowed, cross)
            seen.append((principal, method, template, response.status_code))
            assert response.status_code in expected, (principal, method, path, response.status_code,
                                                      response.text[:300])
            assert response.status_code != 500
            if principal == "other_tenant":
                assert "please list files" not in response.text and ALICE not in response.text
            if principal == "ingest_licence" and path.startswith(API):
                assert response.json()["reason"] == "ingest_credential"
    for path in PUBLIC:
        assert (await reporter.client.get(path)).status_code == 200, path
    assert len(seen) == len(PRINCIPALS) * len(MATRIX)


def test_every_route_of_the_app_has_exactly_the_rules_the_matrix_lists(reporter: Reporter) -> None:
    """No route without a rule (it would be refused with 404 before running), and no rule for nothing."""
    from starlette.routing import Mount, Route  # noqa: PLC0415

    def paths(routes: Any, prefix: str = "") -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for route in routes:
            if isinstance(route, Mount):
                found |= paths(route.routes, prefix + route.path)
            elif isinstance(route, Route):
                found |= {(method, prefix + route.path) for method in route.methods or ()}
        return found

    routes = paths(reporter.app.routes)
    assert unguarded_routes(reporter.app.routes) == []
    for method, path in routes:
        rule, _ = find_rule(path.replace("{record_id:int}", "1"), method)
        assert rule is not None, (method, path)
    assert {(m, r.path) for r in RULES for m in r.methods} <= routes | {("HEAD", "/portal/")}
    matrix_paths = {t.split("?")[0].replace("{record_a}", "{record_id:int}").replace("{token_a}", "{token_id}")
                    .replace(SESSION_1, "{session_id:path}") for _, t, _, _ in MATRIX}
    guarded = {r.path for r in RULES if r.permission.value not in ("public",)}
    assert guarded <= matrix_paths | {"/portal/logout"}  # sign-out: tested with the portal sign-in


async def test_an_unknown_path_is_refused_before_any_handler(reporter: Reporter) -> None:
    for path in (f"{API}/nothing", "/portal/admin", "/api/v2/audit/events"):
        response = await reporter.client.get(path, headers=reporter.tenant_a)
        assert response.status_code == 404, path
    assert (await reporter.client.delete(f"{API}/audit/events", headers=reporter.tenant_a)).status_code == 405


async def test_an_analyst_sees_lengths_never_prompt_or_tool_text(reporter: Reporter, db: asyncpg.Connection) -> None:
    await seed(db)
    analyst = await reporter.bearer(ORG_A, TENANT_A, ANALYST)
    feed = (await reporter.client.get(f"{API}/audit/events?limit=500", headers=analyst)).json()["items"]
    assert len(feed) == 12
    prompts = [i for i in feed if i["event_type"] == "user_prompt"]
    assert prompts and all(i["content"] is None and i["attributes"] is None for i in feed)
    assert {p["content_lengths"]["prompt"] for p in prompts} == {len("please list files; mail me at <EMAIL>"),
                                                                  len("now try again"), len("refactor the parser")}
    summary = (await reporter.client.get(f"{API}/sessions/{SESSION_1}", headers=analyst)).json()
    assert [p["text"] for p in summary["prompts"]] == [None, None]
    assert [p["length"] for p in summary["prompts"]] == [37, 13]
    assert [e["message"] for e in summary["errors"]] == [None]
    for path in ("/portal/events", f"/portal/sessions/{SESSION_1}", f"{API}/audit/events", f"{API}/sessions"):
        text = (await reporter.client.get(path, headers=analyst)).text
        for secret in ("please list files", "now try again", "refactor the parser", "prompt rejected"):
            assert secret not in text, (path, secret)
    page = (await reporter.client.get(f"/portal/sessions/{SESSION_1}", headers=analyst)).text
    assert "37 characters" in page


async def test_a_developer_sees_only_their_own_rows(reporter: Reporter, db: asyncpg.Connection) -> None:
    await seed(db)
    alice = await reporter.bearer(ORG_A, TENANT_A, DEVELOPER, ALICE)
    feed = (await reporter.client.get(f"{API}/audit/events?limit=500", headers=alice)).json()["items"]
    assert len(feed) == 8 and {i["user"]["email"] for i in feed} == {ALICE}
    assert any(i["content"] for i in feed)  # content included
    sessions = (await reporter.client.get(f"{API}/sessions", headers=alice)).json()["items"]
    assert [s["session_id"] for s in sessions] == [SESSION_1]
    assert (await reporter.client.get(f"{API}/sessions/{SESSION_2}", headers=alice)).status_code == 404
    assert (await reporter.client.get(f"/portal/sessions/{SESSION_2}", headers=alice)).status_code == 404
    # Naming someone else in a filter finds nothing rather than their rows.
    bob_filtered = await reporter.client.get(f"{API}/audit/events", params={"session": SESSION_2}, headers=alice)
    assert bob_filtered.json()["items"] == []
    mallory = await reporter.bearer(ORG_A, TENANT_A, DEVELOPER, "mallory@acme.example")
    assert (await reporter.client.get(f"{API}/audit/events", headers=mallory)).json()["items"] == []
    # Carol's e-mail in tenant A finds nothing of tenant B.
    carol_in_a = await reporter.bearer(ORG_A, TENANT_A, DEVELOPER, CAROL)
    assert (await reporter.client.get(f"{API}/audit/events", headers=carol_in_a)).json()["items"] == []


async def test_the_access_trail_is_for_admins_and_auditors(reporter: Reporter, db: asyncpg.Connection) -> None:
    scenario = await seed(db)
    reads = [CanonicalEvent(
        event_id=f"access-{n}", tenant_id=TENANT_A, org_id=ORG_A, license_id=None, plane="access",
        event_type="access", event_time=scenario.start, received_at=scenario.start, user_email=ALICE,
        user_id="token:0123456789abcdef", service_name="audit-reporter",
        attributes={"access.role": "developer", "access.endpoint": f"{API}/audit/events"},
    ) for n in range(2)]
    await append(db, scenario.signer, reads, partition=1)
    for role, email, visible in ((ADMIN, None, 2), (AUDITOR, None, 2), (ANALYST, None, 0), (DEVELOPER, ALICE, 0)):
        headers = await reporter.bearer(ORG_A, TENANT_A, role, email)
        trail = (await reporter.client.get(f"{API}/audit/events?plane=access", headers=headers)).json()["items"]
        assert len(trail) == visible, role
        everything = (await reporter.client.get(f"{API}/audit/events?limit=500", headers=headers)).json()["items"]
        assert (sum(i["plane"] == "access" for i in everything)) == visible, role
    # The trail of reads is not usage: the rollups leave it out.
    usage = (await reporter.client.get(f"{API}/usage?group_by=user&since={scenario.start.date()}",
                                       headers=reporter.tenant_a)).json()
    assert usage["totals"]["events"] == 12


async def _access_events(reporter: Reporter, count: int) -> list[CanonicalEvent]:
    assert reporter.topics is not None
    consumer = AIOKafkaConsumer(reporter.topics.canonical, bootstrap_servers=reporter.app.state.reporter.settings
                                .kafka_bootstrap_servers, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        events: list[CanonicalEvent] = []
        while len(events) < count:
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, f"only {len(events)} access events on the canonical topic"
            for messages in batch.values():
                for message in messages:
                    assert message.key == TENANT_A.encode()
                    assert dict(message.headers)["event_id"].decode().startswith("access-")
                    events.append(CanonicalEvent.from_json(message.value))
        return events
    finally:
        await consumer.stop()


async def test_every_content_or_proof_read_is_an_acknowledged_access_event(reporter: Reporter,
                                                                           db: asyncpg.Connection) -> None:
    await seed(db)
    alice = await reporter.bearer(ORG_A, TENANT_A, DEVELOPER, ALICE)
    analyst = await reporter.bearer(ORG_A, TENANT_A, ANALYST)
    feed = (await reporter.client.get(f"{API}/audit/events?event_type=user_prompt", headers=alice)).json()
    record = feed["items"][0]["id"]
    assert (await reporter.client.get(f"{API}/audit/records/{record}/proof", headers=reporter.tenant_a)).status_code \
        == 200
    assert (await reporter.client.get(f"/portal/sessions/{SESSION_1}", headers=reporter.tenant_a)).status_code == 200
    # Reads that disclose no content leave no trail: an analyst's feed, usage, the session list.
    for path in (f"{API}/audit/events", f"{API}/usage", f"{API}/sessions"):
        assert (await reporter.client.get(path, headers=analyst)).status_code == 200
    events = await _access_events(reporter, 3)
    assert all(e.plane == "access" and e.event_type == "access" and e.tenant_id == TENANT_A for e in events)
    feed_read, proof_read, page_read = events
    assert feed_read.user_email == ALICE and feed_read.attributes["access.role"] == DEVELOPER
    assert feed_read.attributes["access.query"] == {"event_type": "user_prompt"}
    assert feed_read.attributes["access.record_ids"] == [i["id"] for i in feed["items"]]
    assert feed_read.attributes["access.client_address"] == "198.51.100.7"
    assert feed_read.user_id is not None and feed_read.user_id.startswith("token:")
    assert proof_read.attributes["access.disclosed"] == "proof"
    assert proof_read.attributes["access.record_ids"] == [record]
    assert page_read.attributes["access.route"] == "/portal/sessions/{session_id:path}"
    assert page_read.attributes["access.session_id"] == SESSION_1
    assert reporter.app.state.reporter.trail.recorded == 3


async def test_with_the_broker_gone_content_is_refused_not_disclosed_unaudited(reporter: Reporter,
                                                                               db: asyncpg.Connection) -> None:
    await seed(db)

    class Unreachable:
        async def send(self, *args: Any, **kwargs: Any) -> Any:
            from aiokafka.errors import KafkaConnectionError  # noqa: PLC0415

            raise KafkaConnectionError("broker unreachable")

    trail = reporter.app.state.reporter.trail
    trail.producer = Unreachable()
    for path in (f"{API}/audit/events", f"{API}/sessions/{SESSION_1}", "/portal/events"):
        response = await reporter.client.get(path, headers=reporter.tenant_a)
        assert response.status_code == 503, path
        assert "please list files" not in response.text and "Retry-After" in response.headers
    assert (await reporter.client.get(f"{API}/audit/events", headers=reporter.tenant_a)).json()["reason"] == \
        "audit_unavailable"
    # What discloses no content still answers.
    assert (await reporter.client.get(f"{API}/sessions", headers=reporter.tenant_a)).status_code == 200
    analyst = await reporter.bearer(ORG_A, TENANT_A, ANALYST)
    assert (await reporter.client.get(f"{API}/audit/events", headers=analyst)).status_code == 200


@pytest.mark.parametrize("path", [f"{API}/audit/events", f"/portal/sessions/{SESSION_B}"])
async def test_tenant_b_content_never_reaches_tenant_a_roles(reporter: Reporter, db: asyncpg.Connection,
                                                             path: str) -> None:
    await seed(db)
    for role, email in ((ADMIN, None), (AUDITOR, None), (ANALYST, None), (DEVELOPER, CAROL)):
        response = await reporter.client.get(path, headers=await reporter.bearer(ORG_A, TENANT_A, role, email))
        assert SECRET_B not in response.text and response.status_code in (200, 404)


def test_an_app_with_a_route_nobody_guarded_does_not_start() -> None:
    from starlette.routing import Route  # noqa: PLC0415

    async def handler(request: Any) -> Any:
        raise AssertionError("never runs")

    assert unguarded_routes([Route("/api/v1/new-thing", handler)]) == ["GET /api/v1/new-thing",
                                                                       "HEAD /api/v1/new-thing"]


async def test_a_legacy_licence_still_reads_as_an_auditor_with_a_warning(
        reporter: Reporter, caplog: pytest.LogCaptureFixture) -> None:
    legacy = reporter.legacy_licence(ORG_A, TENANT_A)
    with caplog.at_level("WARNING", logger="reporter.access"):
        who = (await reporter.client.get(f"{API}/whoami", headers=legacy)).json()
        await reporter.client.get(f"{API}/whoami", headers=legacy)
    assert (who["role"], who["credential"]) == ("auditor", "licence")
    warnings = [r for r in caplog.records if "legacy reporting entitlement" in r.getMessage()]
    assert len(warnings) == 1  # once per licence, not per request
    assert (await reporter.client.get(f"{API}/tokens", headers=legacy)).status_code == 403  # read only
