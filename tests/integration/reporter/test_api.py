"""The reporting API against a real PostgreSQL holding real signed chains (appended by the signer's code)."""

from __future__ import annotations

import base64

import asyncpg

from services.reporter import chainstatus
from services.reporter.proofcheck import check_proof
from tests.integration.reporter.conftest import Reporter
from tests.integration.reporter.scenario import (
    ALICE,
    BOB_DEVICE,
    OPUS,
    ORG_A,
    SESSION_1,
    SESSION_2,
    SONNET,
    TENANT_A,
    seed,
)

API = "/api/v1"


async def _all_pages(reporter: Reporter, params: dict[str, str]) -> list[dict]:  # type: ignore[type-arg]
    items: list[dict] = []  # type: ignore[type-arg]
    cursor = None
    while True:
        response = await reporter.client.get(f"{API}/audit/events", headers=reporter.tenant_a,
                                             params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_feed_is_newest_first_filterable_and_pages_by_cursor(reporter: Reporter, db: asyncpg.Connection) -> None:
    await seed(db)
    everything = await _all_pages(reporter, {"limit": "5"})
    assert len(everything) == 12
    assert len({e["id"] for e in everything}) == 12
    keys = [(e["event_time"], e["id"]) for e in everything]
    assert keys == sorted(keys, reverse=True)
    assert {e["org_id"] for e in everything} == {ORG_A}

    async def count(**params: str) -> list[dict]:  # type: ignore[type-arg]
        return await _all_pages(reporter, params)

    rejected = await count(decision="reject")
    assert [(e["tool_name"], e["decision"], e["decision_source"]) for e in rejected] == [
        ("Write", "reject", "user_reject")]
    assert len(await count(tool="Bash")) == 2
    assert len(await count(user=ALICE)) == 8
    assert len(await count(user=BOB_DEVICE)) == 4
    assert len(await count(event_type="api_request")) == 3
    assert len(await count(session=SESSION_2)) == 4
    assert len(await count(plane="cowork")) == 0
    first_prompt = everything[-1]
    assert first_prompt["event_type"] == "user_prompt"
    assert first_prompt["content"] == {"prompt": "please list files; mail me at <EMAIL>"}
    assert first_prompt["redacted_fields"] == {"prompt": {"EMAIL": 1}}
    since = everything[-3]["event_time"]
    window = await count(since=since, until=everything[0]["event_time"])
    assert len(window) == 9  # the two oldest are before `since`, the newest is at `until` (exclusive)


async def test_session_summary_tells_what_happened(reporter: Reporter, db: asyncpg.Connection) -> None:
    await seed(db)
    response = await reporter.client.get(f"{API}/sessions/{SESSION_1}", headers=reporter.tenant_a)
    assert response.status_code == 200, response.text
    s = response.json()
    assert s["user"]["key"] == ALICE and s["plane"] == "claude_code"
    assert [p["text"] for p in s["prompts"]] == ["please list files; mail me at <EMAIL>", "now try again"]
    assert s["prompts"][0]["redactions"] == {"EMAIL": 1}
    tools = {t["tool_name"]: t for t in s["tools"]}
    assert (tools["Bash"]["calls"], tools["Bash"]["accepted"], tools["Bash"]["succeeded"]) == (1, 1, 1)
    assert tools["Write"]["rejected"] == 1
    assert (s["approvals"]["accepted"], s["approvals"]["rejected"]) == (1, 1)
    assert [(d["tool_name"], d["decision"]) for d in s["approvals"]["decisions"]] == [
        ("Bash", "accept"), ("Write", "reject")]
    assert s["api"]["calls"] == 2
    assert {m["model"] for m in s["api"]["models"]} == {OPUS, SONNET}
    assert s["api"]["tokens"] == {"input": 1300, "output": 97, "cache_read": 300, "cache_creation": 50,
                                  "total": 1747}
    assert s["api"]["cost"] == "0.007850"
    assert [(e["event_type"], e["status_code"], e["message"]) for e in s["errors"]] == [
        ("api_error", 400, "prompt rejected for <EMAIL>")]
    assert s["content_captured"] is True
    assert s["first_event_time"] < s["last_event_time"]
    assert s["metrics"] is None

    other = (await reporter.client.get(f"{API}/sessions/{SESSION_2}", headers=reporter.tenant_a)).json()
    assert other["user"] == {"key": BOB_DEVICE, "id": BOB_DEVICE, "email": None, "account_uuid": None}
    assert [(e["event_type"], e["tool_name"]) for e in other["errors"]] == [("tool_result", "Edit")]


async def test_sessions_list_and_usage_come_from_the_rollup(reporter: Reporter, db: asyncpg.Connection) -> None:
    scenario = await seed(db)
    sessions = (await reporter.client.get(f"{API}/sessions", headers=reporter.tenant_a)).json()
    assert [s["session_id"] for s in sessions["items"]] == [SESSION_2, SESSION_1]
    assert sessions["rollup"]["current"] is True
    one = sessions["items"][1]
    assert (one["prompts"], one["api_calls"], one["errors"], one["cost"]) == (2, 2, 1, "0.007850")
    assert one["tool_decisions"] == {"accepted": 1, "rejected": 1}
    only_bob = (await reporter.client.get(f"{API}/sessions", params={"user": BOB_DEVICE},
                                          headers=reporter.tenant_a)).json()
    assert [s["session_id"] for s in only_bob["items"]] == [SESSION_2]
    paged = (await reporter.client.get(f"{API}/sessions", params={"limit": "1"}, headers=reporter.tenant_a)).json()
    assert paged["next_cursor"]
    rest = (await reporter.client.get(f"{API}/sessions", params={"limit": "1", "cursor": paged["next_cursor"]},
                                      headers=reporter.tenant_a)).json()
    assert [s["session_id"] for s in rest["items"]] == [SESSION_1] and rest["next_cursor"] is None

    window = {"since": scenario.start.date().isoformat()}
    by_user = (await reporter.client.get(f"{API}/usage", params={"group_by": "user", **window},
                                         headers=reporter.tenant_a)).json()
    users = {g["key"]: g for g in by_user["groups"]}
    assert set(users) == {ALICE, BOB_DEVICE}
    assert (users[ALICE]["cost"], users[ALICE]["sessions"], users[ALICE]["prompts"]) == ("0.007850", 1, 2)
    assert users[ALICE]["tool_acceptance_rate"] == 0.5
    assert (users[BOB_DEVICE]["errors"], users[BOB_DEVICE]["tool_failures"]) == (0, 1)
    assert by_user["totals"]["cost"] == "0.017850" and by_user["totals"]["sessions"] == 2
    by_model = (await reporter.client.get(f"{API}/usage", params={"group_by": "model", **window},
                                          headers=reporter.tenant_a)).json()
    models = {g["key"]: g for g in by_model["groups"]}
    assert models[OPUS]["tokens"]["input"] == 2400 and models[OPUS]["api_calls"] == 2
    assert models[OPUS]["errors"] == 1 and models[OPUS]["prompts"] is None  # prompts have no model
    assert models[SONNET]["cost"] == "0.001000"
    assert by_model["totals"]["cost"] == "0.017850" and by_model["totals"]["prompts"] == 3
    by_day = (await reporter.client.get(f"{API}/usage", params={"group_by": "day", **window},
                                        headers=reporter.tenant_a)).json()
    assert sum(g["api_calls"] for g in by_day["groups"]) == 3
    assert by_day["totals"]["sessions"] == 2 and by_day["totals"]["prompts"] == 3
    # Pages of groups, most expensive first.
    first = (await reporter.client.get(f"{API}/usage", params={"group_by": "user", "limit": "1", **window},
                                       headers=reporter.tenant_a)).json()
    assert [g["key"] for g in first["groups"]] == [BOB_DEVICE] and first["next_offset"] == 1
    assert first["total_groups"] == 2 and first["totals"] == by_user["totals"]
    second = (await reporter.client.get(f"{API}/usage", params={"group_by": "user", "limit": "1", "offset": "1",
                                                                **window}, headers=reporter.tenant_a)).json()
    assert [g["key"] for g in second["groups"]] == [ALICE] and second["next_offset"] is None


async def test_proof_checks_offline_with_its_checkpoint_and_a_tampered_proof_does_not(
        reporter: Reporter, db: asyncpg.Connection) -> None:
    scenario = await seed(db)
    record = (await _all_pages(reporter, {"decision": "reject"}))[0]
    response = await reporter.client.get(record["proof"], headers=reporter.tenant_a)
    assert response.status_code == 200, response.text
    proof = response.json()
    assert proof["signing_key"]["key_id"] == scenario.signer.key_id
    assert proof["server_check"] == {"row_hash_matches": True}
    checkpoints = [r["chain_seq"] for r in await db.fetch(
        "SELECT chain_seq FROM chain_checkpoints WHERE tenant_id = $1 ORDER BY chain_seq", TENANT_A)]
    assert checkpoints and proof["checkpoint"]["chain_seq"] == checkpoints[-1] >= proof["chain_seq"]
    checks = check_proof(proof, trusted_keys=[scenario.signer.public_key])
    assert all(c.ok for c in checks), checks
    assert any(c.name == "checkpoint signature verifies" for c in checks)

    forged = dict(proof, canonical_bytes=proof["canonical_bytes"][:-8] + "AAAAAAA=")
    assert not all(c.ok for c in check_proof(forged, trusted_keys=[scenario.signer.public_key]))
    assert not all(c.ok for c in check_proof(proof, trusted_keys=[bytes(32)]))
    moved = dict(proof, checkpoint=dict(proof["checkpoint"], chain_seq=proof["checkpoint"]["chain_seq"] + 1))
    assert not all(c.ok for c in check_proof(moved, trusted_keys=[scenario.signer.public_key]))


async def test_the_newest_row_has_no_checkpoint_yet(reporter: Reporter, db: asyncpg.Connection) -> None:
    await seed(db)
    newest = (await _all_pages(reporter, {}))[0]
    last_checkpoint = await db.fetchval("SELECT max(chain_seq) FROM chain_checkpoints WHERE tenant_id = $1", TENANT_A)
    proof = (await reporter.client.get(newest["proof"], headers=reporter.tenant_a)).json()
    if proof["chain_seq"] > last_checkpoint:
        assert proof["checkpoint"] is None
    assert all(c.ok for c in check_proof(proof))


async def test_chain_status_follows_the_chain_and_catches_a_rewritten_row(reporter: Reporter,
                                                                         db: asyncpg.Connection) -> None:
    scenario = await seed(db)
    unverified = (await reporter.client.get(f"{API}/audit/verify", headers=reporter.tenant_a)).json()
    assert unverified["tenants"][0]["status"] == "unverified"
    book = await chainstatus.key_book(db)
    result = await chainstatus.advance(db, TENANT_A, book, 1000, scenario.start, rescan_rows=1000)
    assert result is not None and result.status == "ok"
    status = (await reporter.client.get(f"{API}/audit/verify", headers=reporter.tenant_a)).json()["tenants"]
    assert [(t["tenant_id"], t["head_seq"], t["last_verified_seq"], t["status"]) for t in status] == [
        (TENANT_A, 12, 12, "ok")]
    # Someone rewrites an already-verified prompt: the rolling rescan finds it.
    await db.execute("UPDATE audit_logs SET content = '{\"prompt\": \"nothing to see\"}' WHERE tenant_id = $1"
                     " AND chain_seq = 1", TENANT_A)
    for _ in range(3):
        await chainstatus.advance(db, TENANT_A, book, 1000, scenario.start, rescan_rows=1000)
    broken = (await reporter.client.get(f"{API}/audit/verify", headers=reporter.tenant_a)).json()["tenants"][0]
    assert broken["status"] == "broken"
    assert (broken["break"]["seq"], broken["break"]["kind"]) == (1, "modified")


async def test_signing_keys_are_published(reporter: Reporter, db: asyncpg.Connection) -> None:
    scenario = await seed(db)
    keys = (await reporter.client.get(f"{API}/signing-keys", headers=reporter.tenant_a)).json()["keys"]
    assert [k["key_id"] for k in keys] == [scenario.signer.key_id]
    assert keys[0]["algorithm"] == "ed25519" and keys[0]["valid_from"]


async def test_credentials_a_licence_is_refused_with_what_to_send_instead(reporter: Reporter) -> None:
    bare = await reporter.client.get(f"{API}/audit/events")
    assert bare.status_code == 401 and bare.headers["www-authenticate"].startswith("Bearer ")
    ingest_only = reporter.licence(ORG_A, TENANT_A)
    refused = await reporter.client.get(f"{API}/audit/events", headers=ingest_only)
    assert refused.status_code == 403
    assert refused.json()["reason"] == "ingest_credential" and refused.json()["wants"] == "reporting_token"
    assert "Authorization: Bearer" in refused.json()["error"]
    assert (await reporter.client.get(f"{API}/audit/events", headers=reporter.tenant_a)).status_code == 200
    # The same genuine (legacy) licence presented under another org's name.
    legacy = reporter.legacy_licence(ORG_A, TENANT_A)
    token = base64.b64decode(legacy["Authorization"].split()[1]).decode().split(":", 1)[1]
    spoofed = {"Authorization": "Basic " + base64.b64encode(f"globex:{token}".encode()).decode()}
    assert (await reporter.client.get(f"{API}/audit/events", headers=spoofed)).status_code == 401
    forged = {"Authorization": "Bearer rpt1.0123456789abcdef." + "A" * 43}
    assert (await reporter.client.get(f"{API}/audit/events", headers=forged)).status_code == 401
    portal = await reporter.client.get("/portal/events")
    assert portal.status_code == 303 and portal.headers["location"] == "/portal/login?next=/portal/events"
    assert (await reporter.client.get("/openapi.json")).status_code == 200


async def test_bad_parameters_are_400s_that_name_the_parameter(reporter: Reporter) -> None:
    for params in ({"cursor": "not-a-cursor"}, {"since": "yesterday"}, {"limit": "100000"},
                   {"since": "2026-11-02", "until": "2026-11-01"}):
        response = await reporter.client.get(f"{API}/audit/events", params=params, headers=reporter.tenant_a)
        assert response.status_code == 400, params
        assert next(iter(params)) in response.json()["error"]
    bad_grouping = await reporter.client.get(f"{API}/usage", params={"group_by": "team"}, headers=reporter.tenant_a)
    assert bad_grouping.status_code == 400
    integer_cursor = await reporter.client.get(f"{API}/sessions", params={"cursor": "WzEsIjIwMjYtMTEtMjhUMDA6MDA6MDArMDA6MDAiLDVd"},
                                               headers=reporter.tenant_a)
    assert integer_cursor.status_code == 400  # a feed cursor (integer tie-breaker) is not a sessions cursor
