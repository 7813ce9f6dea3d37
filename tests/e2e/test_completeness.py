"""Completeness end to end: a real Claude Code capture with records lost on the way, through receiver,
redactor and signer (each under its own database role), read back through the reporter process; then the
lost records arrive late and the gaps close."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline, get_json_until, running_with_reporter

TOOL_SESSION = "9c82ae41-69ad-4e74-85a8-70cc8c88f69c"  # its records are numbered 0..9
LOST = {3, 6, 7}


@pytest.fixture
async def pipeline(infra: Infra, database_url: str, topics: Topics, tmp_path: Path) -> AsyncIterator[Pipeline]:
    with running_with_reporter(Pipeline(database_url, infra.bootstrap, topics, tmp_path)) as pipe:
        yield pipe


def _without(body: bytes, lost: set[int]) -> bytes:
    """The capture minus the records whose event.sequence is in ``lost`` (what a dropped export loses)."""
    request = ExportLogsServiceRequest.FromString(body)
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            kept = [r for r in scope_logs.log_records
                    if not any(a.key == "event.sequence" and a.value.int_value in lost for a in r.attributes)]
            del scope_logs.log_records[:]
            scope_logs.log_records.extend(kept)
    return request.SerializeToString()


async def test_gaps_are_reported_and_late_arrivals_close_them(pipeline: Pipeline, fixtures_dir: Path) -> None:
    token = await pipeline.licence("acme", tenant="tenant-acme")
    capture = (fixtures_dir / "logs-tool-session.pb").read_bytes()
    response = await pipeline.post("/v1/logs", _without(capture, LOST), org="acme", token=token,
                                   content_type="application/x-protobuf")
    assert response.status_code == 200, response.text

    reporter = f"http://127.0.0.1:{pipeline.extra_env['REPORTER_PORT']}"
    auth = "Bearer " + await pipeline.token("acme", "auditor", tenant="tenant-acme")
    async with httpx.AsyncClient(base_url=reporter, headers={"Authorization": auth}, timeout=30) as client:
        summary = await get_json_until(client, f"/api/v1/sessions/{TOOL_SESSION}", lambda s: s["events"] == 7)
        report = summary["completeness"]
        assert report["expected_range"] == [0, 9]
        assert (report["expected"], report["received"], report["missing"]) == (10, 7, 3)
        assert report["missing_ranges"] == [[3, 3], [6, 7]] and report["duplicates"] == []
        # The capture's own days (it was recorded in the past), not the default last 30 days.
        day = date.fromisoformat(summary["first_event_time"][:10])
        days = {"since": day.isoformat(), "until": (day + timedelta(days=2)).isoformat()}
        window = (await client.get("/api/v1/completeness", params=days)).json()
        assert (window["tenant"]["missing"], window["tenant"]["sessions_with_gaps"]) == (3, 1)

        # The exporter retries the whole batch later: the rows already signed are skipped, the lost ones land.
        response = await pipeline.post("/v1/logs", capture, org="acme", token=token,
                                       content_type="application/x-protobuf")
        assert response.status_code == 200, response.text
        summary = await get_json_until(client, f"/api/v1/sessions/{TOOL_SESSION}", lambda s: s["events"] == 10)
        assert summary["completeness"]["missing_ranges"] == []
        assert summary["completeness"]["completeness"] == 1.0
        window = (await client.get("/api/v1/completeness", params=days)).json()
        assert window["tenant"]["missing"] == 0 and window["tenant"]["completeness"] == 1.0
