"""Erasure end to end: real captures through receiver -> redactor -> signer, then `auditctl erase` produces
a signed erasure event through the canonical topic and the real signer, deletes the content, and
`auditctl verify` passes and counts the erased row; the reporter shows the erasure where the prompt was."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shared.db.pool import connect
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline, running_with_reporter

TOOL_SESSION = "9c82ae41-69ad-4e74-85a8-70cc8c88f69c"
TENANT = "tenant-acme"


@pytest.fixture
async def pipeline(infra: Infra, database_url: str, topics: Topics, tmp_path: Path) -> AsyncIterator[Pipeline]:
    with running_with_reporter(Pipeline(database_url, infra.bootstrap, topics, tmp_path)) as pipe:
        yield pipe


def _auditctl(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.auditctl", *args], env=pipeline.env(),
                          capture_output=True, text=True, timeout=180, check=False)


async def test_erase_through_the_pipeline_and_verify(pipeline: Pipeline, fixtures_dir: Path) -> None:
    token = await pipeline.licence("acme", tenant=TENANT)
    response = await pipeline.post("/v1/logs", (fixtures_dir / "logs-tool-session.pb").read_bytes(), org="acme",
                                   token=token, content_type="application/x-protobuf")
    assert response.status_code == 200, response.text
    conn = await connect(pipeline.database_url)
    try:
        deadline = time.monotonic() + 60
        prompt = None
        while prompt is None:
            prompt = await conn.fetchrow(
                "SELECT a.event_id, a.chain_seq, c.content FROM audit_logs a JOIN audit_content c"
                " USING (tenant_id, chain_seq) WHERE a.tenant_id = $1 AND a.event_type = 'user_prompt'", TENANT)
            assert prompt is not None or time.monotonic() < deadline, "the prompt was never chained"
            await asyncio.sleep(0.3)
        assert prompt["content"].get("prompt")

        erased = await asyncio.to_thread(_auditctl, pipeline, "erase", "--event", prompt["event_id"],
                                         "--reason", "GDPR request 41", "--by", "dpo@acme.example")
        assert erased.returncode == 0, erased.stdout + erased.stderr
        assert "ERASED rows=1" in erased.stdout
        assert await conn.fetchval("SELECT count(*) FROM audit_content WHERE tenant_id = $1 AND chain_seq = $2",
                                   TENANT, prompt["chain_seq"]) == 0
        event = await conn.fetchrow("SELECT * FROM audit_logs WHERE tenant_id = $1 AND plane = 'erasure'", TENANT)
        assert event["attributes"]["erasure.rows"] == [prompt["chain_seq"]]
        assert event["attributes"]["erasure.reason"] == "GDPR request 41"
        assert event["user_id"] == "dpo@acme.example" and event["chain_seq"] > prompt["chain_seq"]

        verified = await asyncio.to_thread(_auditctl, pipeline, "verify", "--tenant", TENANT)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "erased=1" in verified.stdout

        reporter = f"http://127.0.0.1:{pipeline.extra_env['REPORTER_PORT']}"
        auditor = await pipeline.token("acme", "auditor", tenant=TENANT)
        async with httpx.AsyncClient(base_url=reporter, headers={"Authorization": f"Bearer {auditor}"},
                                     timeout=30) as client:
            summary = (await client.get(f"/api/v1/sessions/{TOOL_SESSION}")).json()
            [shown] = summary["prompts"]
            assert shown["text"] is None
            assert shown["erasure"]["text"].endswith("(GDPR request 41)")
            portal = await client.get(f"/portal/sessions/{TOOL_SESSION}")
            assert "GDPR request 41" in portal.text

        # Content removed behind the pipeline's back is a break that verify names.
        others = await conn.fetchval(
            "SELECT min(chain_seq) FROM audit_content WHERE tenant_id = $1 AND content <> '{}'::jsonb", TENANT)
        await conn.execute("DELETE FROM audit_content WHERE tenant_id = $1 AND chain_seq = $2", TENANT, others)
        forged = await asyncio.to_thread(_auditctl, pipeline, "verify", "--tenant", TENANT)
        assert forged.returncode == 1, forged.stdout
        assert f"seq={others} kind=unrecorded_erasure" in forged.stdout
    finally:
        await conn.close()
