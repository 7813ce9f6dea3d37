"""The whole path a security lead relies on: real Claude Code captures (logs and metrics) through
receiver -> redactor -> signer and the metrics consumer, read back through the reporter process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.reporter.proofcheck import check_proof
from shared.db.pool import connect
from shared.keys import load_signer
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline, get_json_until, running_with_reporter

TOOL_SESSION = "9c82ae41-69ad-4e74-85a8-70cc8c88f69c"
ERROR_SESSION = "8da825b9-eacd-4c59-9b4b-2141b56eb381"
USER = "549194b3250c8d36100b151a3a002230bbebfe2166dd98d789007d94f7b8653f"
RAW_PII = ("jane.roe@example.com", "john.smith@example.org", "alice@corp.example", "078-05-1120")


@pytest.fixture
async def pipeline(infra: Infra, database_url: str, topics: Topics, tmp_path: Path) -> AsyncIterator[Pipeline]:
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path, extra_env={
        "REPORTER_VERIFY_INTERVAL_SECONDS": "0.5",
        "USAGE_GROUP_ID": f"usage-{topics.raw_metrics}",
        "USAGE_METRICS_PORT": "0",
    })
    with running_with_reporter(pipe, "usage"):
        yield pipe


async def test_captures_become_reports_with_proofs(pipeline: Pipeline, fixtures_dir: Path) -> None:
    token = await pipeline.licence("acme", tenant="tenant-acme")
    for name, path in (("logs-tool-session.pb", "/v1/logs"), ("logs-api-error.pb", "/v1/logs"),
                       ("metrics-tool-session.pb", "/v1/metrics")):
        response = await pipeline.post(path, (fixtures_dir / name).read_bytes(), org="acme", token=token,
                                       content_type="application/x-protobuf")
        assert response.status_code == 200, (name, response.text)

    reporter = f"http://127.0.0.1:{pipeline.extra_env['REPORTER_PORT']}"
    async with httpx.AsyncClient(base_url=reporter, timeout=30) as licensed:
        # The ingest licence reads nothing: it names the credential it wants instead.
        refused = await licensed.get("/api/v1/audit/events", auth=("acme", token))
        assert refused.status_code == 403 and refused.json()["wants"] == "reporting_token"
    auditor = await pipeline.token("acme", "auditor", tenant="tenant-acme")
    auth = f"Bearer {auditor}"
    async with httpx.AsyncClient(base_url=reporter, headers={"Authorization": auth}, timeout=30) as client:
        # The session summary, once both the log rows and the metric points are in.
        summary = await get_json_until(client, f"/api/v1/sessions/{TOOL_SESSION}",
                                    lambda s: s["api"]["calls"] == 2 and s["metrics"] is not None)
        assert summary["user"]["key"] == USER and summary["plane"] == "claude_code"
        assert len(summary["prompts"]) == 1 and summary["prompts"][0]["text"]
        assert summary["prompts"][0]["redactions"]  # the e-mail and phone number were masked
        assert [(t["tool_name"], t["accepted"], t["calls"]) for t in summary["tools"]] == [("Bash", 1, 1)]
        assert summary["approvals"]["accepted"] == 1 and summary["approvals"]["rejected"] == 0
        assert summary["api"]["cost"] == "0.013700" and summary["api"]["tokens"]["input"] == 2400
        assert summary["content_captured"] is True
        assert summary["metrics"]["active_time_seconds"]["cli"] == pytest.approx(0.182)
        assert summary["metrics"]["cost"] == "0.013700"

        # The api_error batch is a separate message and may land after the tool session: wait for it too.
        failed = await get_json_until(client, f"/api/v1/sessions/{ERROR_SESSION}", lambda s: bool(s.get("errors")))
        assert [(e["event_type"], e["status_code"]) for e in failed["errors"]] == [("api_error", 400)]

        # Usage per user joins the audit rows and the metrics.
        usage = await get_json_until(client, "/api/v1/usage?group_by=user",
                                  lambda u: u["groups"] and u["groups"][0]["api_calls"] == 2)
        [mine] = usage["groups"]
        assert (mine["key"], mine["sessions"], mine["prompts"], mine["errors"]) == (USER, 2, 2, 1)
        assert mine["metrics"]["tokens"]["total"] == 2400 + 174 + 600 + 100

        # Rejected/accepted feed, then a row's proof, checked offline against the signer's own key.
        feed = (await client.get("/api/v1/audit/events", params={"event_type": "tool_decision"})).json()
        [decision] = feed["items"]
        assert (decision["tool_name"], decision["decision"], decision["decision_source"]) == ("Bash", "accept",
                                                                                                "config")
        proof = (await client.get(decision["proof"])).json()
        signing_key = load_signer(file=str(pipeline.work_dir / "keys" / "signing.key"))
        checks = check_proof(proof, trusted_keys=[signing_key.public_key])
        assert all(c.ok for c in checks), checks

        # The reporter's own chain check reaches the head.
        status = await get_json_until(client, "/api/v1/audit/verify", lambda v: v["tenants"][0]["status"] == "ok")
        assert status["tenants"][0]["head_seq"] == status["tenants"][0]["last_verified_seq"] > 0

        everything = (await client.get("/api/v1/audit/events", params={"limit": "500"})).text
        portal_page = await client.get(f"/portal/sessions/{TOOL_SESSION}")
        assert portal_page.status_code == 200, portal_page.text[:500]
        portal = portal_page.text
        for raw in RAW_PII:
            assert raw not in everything and raw not in portal

        # Each of those content and proof reads is itself a signed row on the tenant's chain (plane access),
        # which the feed filters and auditors see.
        # The portal page was the last read: once its row is in, all the earlier ones are too.
        trail = await get_json_until(client, "/api/v1/audit/events?plane=access&limit=500", lambda f: any(
            i["attributes"]["access.route"] == "/portal/sessions/{session_id:path}" for i in f["items"]))
        reads = {(i["attributes"]["access.route"], i["attributes"]["access.disclosed"]) for i in trail["items"]}
        assert ("/api/v1/audit/records/{record_id:int}/proof", "proof") in reads
        assert ("/api/v1/sessions/{session_id:path}", "content") in reads
        assert ("/portal/sessions/{session_id:path}", "content") in reads
        proof_read = next(i for i in trail["items"] if i["attributes"]["access.disclosed"] == "proof")
        assert proof_read["attributes"]["access.record_ids"] == [decision["id"]]
        assert proof_read["attributes"]["access.subject"].startswith("token:")
        assert proof_read["attributes"]["access.role"] == "auditor"
        assert proof_read["user"]["id"] == proof_read["attributes"]["access.subject"]
        assert proof_read["attributes"]["access.client_address"] == "127.0.0.1"
        assert {i["event_type"] for i in trail["items"]} == {"access"}
        access_proof = (await client.get(proof_read["proof"])).json()
        assert all(c.ok for c in check_proof(access_proof, trusted_keys=[signing_key.public_key]))

    # And the whole chain, access rows included, verifies.
    conn = await connect(pipeline.database_url)
    try:
        rows = await conn.fetchval(
            "SELECT count(*) FROM audit_logs WHERE tenant_id = 'tenant-acme' AND plane = 'access'")
        assert rows >= 6
    finally:
        await conn.close()
    verify = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.auditctl", "verify", "--tenant", "tenant-acme"],
        # The anchors this pipeline's signer published, not whatever a local `make run` left under var/.
        env={**os.environ, "DATABASE_URL": pipeline.database_url,
             "CHECKPOINT_WITNESS_DIR": str(pipeline.witness_dir)}, capture_output=True, text=True, timeout=120,
        check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "OK tenant=tenant-acme" in verify.stdout
