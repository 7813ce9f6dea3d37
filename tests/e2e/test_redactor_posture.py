"""A tenant whose posture turns detection off gets its events recorded with the content withheld."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.canonical import WITHHELD_MARKER
from shared.db.pool import connect
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline


@pytest.fixture
async def pipeline(infra: Infra, database_url: str, topics: Topics, tmp_path: Path) -> AsyncIterator[Pipeline]:
    conn = await connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO detection_postures (tenant_id, detection_enabled, categories) VALUES ($1, false, $2)",
            "t-dark",
            {"EMAIL": "redact"},
        )
    finally:
        await conn.close()
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path, extra_env={"POSTURE_REFRESH_SECONDS": "0.5"})
    pipe.start()
    try:
        yield pipe
    finally:
        pipe.stop()


async def test_detection_off_withholds_content_but_records_the_events(pipeline: Pipeline, fixtures_dir: Path) -> None:
    token = await pipeline.licence("dark-org", tenant="t-dark")
    body = (fixtures_dir / "logs-api-error.pb").read_bytes()
    response = await pipeline.post("/v1/logs", body, org="dark-org", token=token, content_type="application/x-protobuf")
    assert response.status_code == 200
    rows = await pipeline.wait_for_rows(6)
    assert len(rows) == 6
    prompt = next(r for r in rows if r["event_type"] == "user_prompt")
    assert prompt["content"] == {"prompt": WITHHELD_MARKER}
    error = next(r for r in rows if r["event_type"] == "api_error")
    assert error["content"] == {"error": WITHHELD_MARKER}
    assert error["status_code"] == 400 and error["model"] == "claude-opus-5-5"
