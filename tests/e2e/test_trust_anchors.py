"""The trust anchors with the real services: the signer publishes its checkpoints to the witness as it makes
them, refuses a key no operator enrolled, and ``auditctl verify`` catches a tail cut the database hides."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.db.pool import connect
from shared.enrollment import record_signing_key
from shared.keys import load_signer, write_new_key
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline
from tests.e2e.test_foundation import _record_count, _send_all


@pytest.fixture
async def pipeline(infra: Infra, database_url: str, topics: Topics, tmp_path: Path) -> AsyncIterator[Pipeline]:
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path,
                    extra_env={"CHECKPOINT_EVERY_ROWS": "5", "CHECKPOINT_EVERY_SECONDS": "1"})
    try:
        yield pipe
    finally:
        pipe.stop()


def _witnessed(pipe: Pipeline, tenant: str) -> list[dict[str, object]]:
    path = pipe.witness_dir / "checkpoints" / f"{tenant}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _verify(pipe: Pipeline) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.cli", "verify", "--quiet"], env=pipe.env(),
                          capture_output=True, text=True, timeout=120, check=False)


async def test_the_signer_publishes_checkpoints_and_verify_catches_a_hidden_tail_cut(
    pipeline: Pipeline, fixtures_dir: Path
) -> None:
    pipeline.start()
    token = await pipeline.licence("acme", tenant="tenant-acme")
    await _send_all(pipeline, fixtures_dir, "acme", token)
    expected = _record_count(fixtures_dir)
    rows = await pipeline.wait_for_rows(expected)
    assert len(rows) == expected, pipeline.log_of("signer")[-3000:]
    # The quiet chain's last checkpoint reaches the witness within seconds, with no one asking.
    deadline = time.monotonic() + 30
    while not any(r["chain_seq"] == expected for r in _witnessed(pipeline, "tenant-acme")):
        assert time.monotonic() < deadline, (_witnessed(pipeline, "tenant-acme"), pipeline.log_of("signer")[-3000:])
        await asyncio.sleep(0.2)
    intact = _verify(pipeline)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert intact.stdout.splitlines()[0].startswith("anchors: ") and "pinned in the witness" in intact.stdout
    pipeline.stop()

    keep = expected // 2
    conn = await connect(pipeline.database_url)
    try:
        await conn.execute("DELETE FROM audit_logs WHERE chain_seq > $1", keep)
        head = await conn.fetchval("SELECT row_hash FROM audit_logs WHERE chain_seq = $1", keep)
        await conn.execute("UPDATE chain_heads SET head_seq = $1, head_hash = $2", keep, head)
        await conn.execute("DELETE FROM chain_checkpoints WHERE chain_seq > $1", keep)
    finally:
        await conn.close()
    cut = _verify(pipeline)
    assert cut.returncode == 1
    assert f"BROKEN tenant=tenant-acme seq={keep + 1} kind=truncated" in cut.stdout, cut.stdout + cut.stderr


async def _exit_of_signer(pipe: Pipeline) -> tuple[int | None, str]:
    pipe.start("signer")
    assert pipe.group is not None
    process = pipe.group.processes["signer"]
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return process.poll(), pipe.log_of("signer")


async def test_the_signer_refuses_a_key_no_operator_enrolled(pipeline: Pipeline) -> None:
    (pipeline.work_dir / "keys").mkdir(parents=True)
    write_new_key(pipeline.work_dir / "keys" / "signing.key")
    pipeline.enrolled = True  # the operator forgot
    code, log = await _exit_of_signer(pipeline)
    assert code not in (None, 0)
    assert "refusing to sign" in log and "is not enrolled (not in the database)" in log and "auditctl keys enroll" in log


async def test_the_signer_refuses_a_key_enrolled_in_the_database_only(pipeline: Pipeline) -> None:
    (pipeline.work_dir / "keys").mkdir(parents=True)
    signer = write_new_key(pipeline.work_dir / "keys" / "signing.key")
    conn = await connect(pipeline.database_url)
    try:
        await record_signing_key(conn, signer.public_key)  # someone with a database credential, not the operator
    finally:
        await conn.close()
    pipeline.witness_dir.mkdir(parents=True)
    pipeline.enrolled = True
    code, log = await _exit_of_signer(pipeline)
    assert code not in (None, 0)
    assert "not pinned in the witness" in log, log[-2000:]
    assert load_signer(file=str(pipeline.work_dir / "keys" / "signing.key")).key_id in log
