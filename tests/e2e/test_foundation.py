"""The real Claude Code captures, through receiver -> redactor -> signer, into signed audit rows."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared import otlp
from shared.db.pool import connect
from shared.verify import published_keys, tenants, verify_tenant
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline

CAPTURES = [
    ("logs-tool-session.pb", "application/x-protobuf", None),
    ("logs-tool-session.json.gz", "application/json", "gzip"),
    ("logs-tool-session-nocontent.pb.gz", "application/x-protobuf", "gzip"),
    ("logs-api-error.pb", "application/x-protobuf", None),
]
PII = [
    "jane.roe@example.com",
    "john.smith@example.org",
    "alice@corp.example",
    "415 555 0134",
    "078-05-1120",
    "4155550134",
]
AUDITED = {"user_prompt", "tool_result", "tool_decision", "api_request", "api_error"}


def _record_count(fixtures_dir: Path) -> int:
    total = 0
    for name, content_type, encoding in CAPTURES:
        body = (fixtures_dir / name).read_bytes()
        if encoding == "gzip":
            body = gzip.decompress(body)
        total += otlp.count_log_records(
            otlp.decode_request(
                body,
                otlp.media_type(content_type),  # type: ignore[arg-type]
                otlp.ExportLogsServiceRequest,
            )
        )
    return total


@pytest.fixture
async def pipeline(infra: Infra, database_url: str, topics: Topics, tmp_path: Path) -> AsyncIterator[Pipeline]:
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path)
    pipe.start()
    try:
        yield pipe
    finally:
        pipe.stop()


async def _send_all(pipe: Pipeline, fixtures_dir: Path, org: str, token: str) -> None:
    for name, content_type, encoding in CAPTURES:
        response = await pipe.post(
            "/v1/logs",
            (fixtures_dir / name).read_bytes(),
            org=org,
            token=token,
            content_type=content_type,
            content_encoding=encoding,
        )
        assert response.status_code == 200, (name, response.status_code, response.content)


async def test_real_captures_become_redacted_signed_rows(pipeline: Pipeline, fixtures_dir: Path) -> None:
    token = await pipeline.licence("acme", tenant="tenant-acme")
    await _send_all(pipeline, fixtures_dir, "acme", token)
    expected = _record_count(fixtures_dir)
    rows = await pipeline.wait_for_rows(expected)
    assert len(rows) == expected, pipeline.log_of("redactor")[-3000:] + pipeline.log_of("signer")[-3000:]

    kinds = Counter(r["event_type"] for r in rows)
    assert set(kinds) >= AUDITED, kinds
    for row in rows:
        assert row["tenant_id"] == "tenant-acme" and row["org_id"] == "acme"
        assert row["plane"] == "claude_code"
        assert row["received_at"] is not None and row["event_time"] is not None
        assert len(row["signature"]) == 64 and len(row["row_hash"]) == 32
    api = [r for r in rows if r["event_type"] == "api_request"]
    assert all(
        r["model"] == "claude-opus-5-5" and r["tokens_used"] == 1637 and str(r["cost"]) == "0.006850" for r in api
    )
    assert {r["decision"] for r in rows if r["event_type"] == "tool_decision"} == {"accept"}
    prompts = [r for r in rows if r["event_type"] == "user_prompt"]
    assert all(r["correlation_id"] and r["session_id"] and r["user_id"] for r in prompts)
    assert any(r["content_captured"] is False for r in prompts)  # the nocontent capture

    # Nothing in clear anywhere in the database, not only in audit_logs.
    conn = await connect(pipeline.database_url)
    try:
        # Content of hash version 2 rows is kept apart from them, in audit_content.
        dump = json.dumps([dict(r) for table in ("audit_logs", "audit_content")
                           for r in await conn.fetch(f"SELECT * FROM {table}")], default=str)
        for secret in PII:
            assert secret not in dump, secret
        assert "<EMAIL>" in dump
        reports = [await verify_tenant(conn, t, await published_keys(conn)) for t in await tenants(conn)]
        assert all(r.ok for r in reports), [r.breaks for r in reports]
    finally:
        await conn.close()


async def test_client_retry_creates_no_duplicates(pipeline: Pipeline, fixtures_dir: Path) -> None:
    token = await pipeline.licence("acme")
    await _send_all(pipeline, fixtures_dir, "acme", token)
    expected = _record_count(fixtures_dir)
    assert len(await pipeline.wait_for_rows(expected)) == expected
    await _send_all(pipeline, fixtures_dir, "acme", token)  # an exporter's retry of every batch
    # Send a marker batch last: once it is in, the retried batches before it have been processed too.
    marker = otlp.ExportLogsServiceRequest()
    record = marker.resource_logs.add().scope_logs.add().log_records.add()
    record.body.string_value = "claude_code.user_prompt"
    record.time_unix_nano = 1795878787316000000
    response = await pipeline.post(
        "/v1/logs", marker.SerializeToString(), org="acme", token=token, content_type="application/x-protobuf"
    )
    assert response.status_code == 200
    rows = await pipeline.wait_for_rows(expected + 1)
    assert len(rows) == expected + 1
    assert len({r["event_id"] for r in rows}) == len(rows)


def test_verify_command_passes(pipeline: Pipeline) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.auditctl", "verify"], env=pipeline.env(), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
