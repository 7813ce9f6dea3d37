"""The trust anchors with the real services: the signer publishes its checkpoints to the witness as it makes
them, refuses a key no operator enrolled, and ``auditctl verify`` catches a tail cut the database hides."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import pytest

from shared.db.pool import connect
from shared.enrollment import record_signing_key
from shared.keys import load_signer, write_new_key
from shared.witness import S3Witness
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline
from tests.e2e.test_foundation import _record_count, _send_all
from tests.s3server import CREDENTIALS, s3_server


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
    return subprocess.run([sys.executable, "-m", "services.auditctl", "verify", "--quiet"], env=pipe.env(),
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
        await conn.execute("SET session_replication_role = replica")  # a superuser, past any trigger
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


@pytest.fixture
def s3_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with s3_server(tmp_path / "moto.log") as endpoint:
        yield endpoint


async def test_the_signer_publishes_to_an_object_lock_bucket(
    infra: Infra, database_url: str, topics: Topics, tmp_path: Path, fixtures_dir: Path, s3_endpoint: str
) -> None:
    """The production witness end to end: a real S3 API server (moto), a bucket with Object Lock, the key
    enrolled there, the signer publishing its checkpoints there, and verify reading them back."""
    bucket = f"witness-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path, extra_env={
        **CREDENTIALS, "CHECKPOINT_WITNESS_DIR": "", "CHECKPOINT_WITNESS_S3_BUCKET": bucket,
        "CHECKPOINT_WITNESS_S3_ENDPOINT_URL": s3_endpoint, "CHECKPOINT_WITNESS_S3_PREFIX": "audit",
        "CHECKPOINT_EVERY_ROWS": "5", "CHECKPOINT_EVERY_SECONDS": "1",
    })
    try:
        pipe.start()
        token = await pipe.licence("acme", tenant="tenant-acme")
        await _send_all(pipe, fixtures_dir, "acme", token)
        expected = _record_count(fixtures_dir)
        assert len(await pipe.wait_for_rows(expected)) == expected, pipe.log_of("signer")[-3000:]
        witness = S3Witness.connect(bucket, prefix="audit", endpoint_url=s3_endpoint, region="us-east-1")
        deadline = time.monotonic() + 30
        while not any(int(r["chain_seq"]) == expected for r in await asyncio.to_thread(witness.checkpoint_records)):
            assert time.monotonic() < deadline, pipe.log_of("signer")[-3000:]
            await asyncio.sleep(0.3)
        result = _verify(pipe)
        assert result.returncode == 0, result.stdout + result.stderr
        first = result.stdout.splitlines()[0]
        assert first.startswith("anchors: ") and f"witness bucket s3://{bucket}/audit/" in first
        assert "1 key(s) pinned in the witness bucket" in first
    finally:
        pipe.stop()
