"""The checkpoint witness outside PostgreSQL: the directory witness, the S3 bucket witness against a real S3 API
server (moto's server mode, started here), and the publisher beside the signer that feeds either."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.signer.appender import CheckpointPolicy, OffsetEvent, append_batch
from services.signer.publisher import publish_pending, run_publisher
from shared.db.pool import create_pool
from shared.enrollment import enroll, pinned_keys
from shared.keys import Ed25519Signer
from shared.verify import load_key_book, stored_checkpoints, verify_tenant, witnessed_checkpoints
from shared.witness import DirectoryWitness, S3Witness, TrustedKey, WitnessError, tenant_file_name
from tests.integration.signer.test_append import event
from tests.s3server import CREDENTIALS, s3_server


def _record(seq: int, tenant: str = "t1", **extra: Any) -> dict[str, Any]:
    return {"tenant_id": tenant, "chain_seq": seq, "head_hash": "ab" * 32, "created_at": "2026-11-28T12:00:00.000000Z",
            "key_id": "k", "signature": "cd" * 64, **extra}


def test_directory_witness_appends_each_record_once(tmp_path: Path) -> None:
    witness = DirectoryWitness(tmp_path)
    assert witness.publish("t1", [_record(1), _record(5)]) == 2
    # A publisher that died before moving its cursor publishes the same records again: nothing doubles.
    assert witness.publish("t1", [_record(1), _record(5), _record(9, tree_size=9)]) == 1
    lines = (tmp_path / "checkpoints" / "t1.jsonl").read_text().splitlines()
    assert [json.loads(line)["chain_seq"] for line in lines] == [1, 5, 9]
    # Members it does not know (a Merkle tree head, say) are kept as published.
    assert json.loads(lines[-1])["tree_size"] == 9
    assert DirectoryWitness(tmp_path).publish("t1", [_record(9)]) == 0  # a fresh process reads the last line


def test_a_line_torn_by_a_crash_is_ignored_and_terminated(tmp_path: Path) -> None:
    witness = DirectoryWitness(tmp_path)
    witness.publish("t1", [_record(1)])
    path = tmp_path / "checkpoints" / "t1.jsonl"
    with path.open("ab") as handle:
        handle.write(b'{"tenant_id": "t1", "chain_se')
    witness.publish("t1", [_record(2)])
    assert [r["chain_seq"] for r in DirectoryWitness(tmp_path).checkpoint_records()] == [1, 2]


def test_tenant_ids_are_safe_file_names() -> None:
    assert tenant_file_name("acme") == "acme"
    assert tenant_file_name("../etc/passwd") == "%2E.%2Fetc%2Fpasswd"
    assert "/" not in tenant_file_name("a/b") and tenant_file_name(".") == "%2E"


def test_pinned_keys_are_recomputed_from_the_public_key(tmp_path: Path) -> None:
    witness = DirectoryWitness(tmp_path)
    key = Ed25519Signer.generate()
    assert witness.enroll(TrustedKey(key.key_id, key.public_key, datetime.now(UTC), "ops"))
    assert not witness.enroll(TrustedKey(key.key_id, key.public_key, datetime.now(UTC)))
    # Someone edits the id in the file: the id used is still the one the key itself gives.
    path = tmp_path / "trusted-keys.jsonl"
    path.write_text(path.read_text().replace(key.key_id, "0" * 32))
    assert [k.key_id for k in witness.trusted_keys()] == [key.key_id]


# --- S3 with Object Lock, against a real S3 API server -----------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def _bucket(endpoint: str, *, object_lock: bool = True) -> S3Witness:
    name = f"witness-{uuid.uuid4().hex[:12]}"
    witness = S3Witness.connect(name, prefix="audit", endpoint_url=endpoint, region="us-east-1")
    witness._client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
    return witness


def test_bucket_witness_writes_each_record_once_under_object_lock(s3_endpoint: str, s3_credentials: None) -> None:
    witness = _bucket(s3_endpoint)
    witness.check_object_lock()
    assert witness.publish("t1", [_record(1), _record(7)]) == 2
    assert witness.publish("t1", [_record(7), _record(9)]) == 1
    assert sorted(r["chain_seq"] for r in witness.checkpoint_records()) == [1, 7, 9]
    key = witness._checkpoint_key("t1", 7)
    assert witness.location("t1", 7) == f"s3://{witness.bucket}/{key}"
    assert key == "audit/checkpoints/t1/00000000000000000007.json"
    client = witness._client
    head = client.head_object(Bucket=witness.bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=365)
    # Whoever holds the bucket's credentials cannot remove the locked record.
    version = head["VersionId"]
    with pytest.raises(Exception, match=r"AccessDenied|locked|retention|Object Lock"):
        client.delete_object(Bucket=witness.bucket, Key=key, VersionId=version)
    signer = Ed25519Signer.generate()
    assert witness.enroll(TrustedKey(signer.key_id, signer.public_key, datetime.now(UTC)))
    assert [k.key_id for k in witness.trusted_keys()] == [signer.key_id]


def test_a_bucket_without_object_lock_is_refused(s3_endpoint: str, s3_credentials: None) -> None:
    with pytest.raises(WitnessError, match="Object Lock"):
        _bucket(s3_endpoint, object_lock=False).check_object_lock()


async def test_the_publisher_feeds_a_bucket_and_verify_reads_it_back(
    db: asyncpg.Connection, signing_key: Ed25519Signer, s3_endpoint: str, s3_credentials: None
) -> None:
    witness = _bucket(s3_endpoint)
    await enroll(db, witness, signing_key.public_key)
    batch = [OffsetEvent(i, event(i)) for i in range(30)]
    await append_batch(db, signing_key, group="g", topic="c", partition=0, batch=batch,
                       checkpoints=CheckpointPolicy(every_rows=10))
    assert await publish_pending(db, witness) == len(await stored_checkpoints(db))
    assert await publish_pending(db, witness) == 0  # the cursor moved
    witnessed = witnessed_checkpoints(witness.checkpoint_records())
    assert witnessed == await stored_checkpoints(db)
    book = await load_key_book(db, await pinned_keys(witness))
    report = await verify_tenant(db, "t1", book, checkpoints=witnessed)
    assert report.ok and report.checkpoints_checked == len(witnessed)


# --- the publisher: retries, loses nothing -----------------------------------------------------------------


class _FlakyWitness(DirectoryWitness):
    """A witness that is unreachable for its first few calls."""

    failures: int = 3

    def publish(self, tenant_id: str, records: Any) -> int:
        if self.failures > 0:
            self.failures -= 1
            raise WitnessError("witness unreachable")
        return super().publish(tenant_id, records)


async def test_the_publisher_retries_an_unreachable_witness_and_loses_nothing(
    database_url: str, db: asyncpg.Connection, signing_key: Ed25519Signer, tmp_path: Path
) -> None:
    witness = _FlakyWitness(tmp_path)
    await enroll(db, witness, signing_key.public_key)
    pool = await create_pool(database_url, min_size=1, max_size=2)
    stop = asyncio.Event()
    publisher = asyncio.create_task(run_publisher(pool, witness, stop, interval=0.05))
    try:
        for start in range(0, 40, 10):  # appends go on while the witness is down
            batch = [OffsetEvent(i, event(i)) for i in range(start, start + 10)]
            await append_batch(db, signing_key, group="g", topic="c", partition=0, batch=batch,
                               checkpoints=CheckpointPolicy(every_rows=10))
        stored = await stored_checkpoints(db)
        deadline = time.monotonic() + 30
        while len(witness.checkpoint_records()) < len(stored) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await publisher
        await pool.close()
    assert witness.failures == 0
    assert witnessed_checkpoints(witness.checkpoint_records()) == stored
    assert [c.chain_seq for c in stored] == [10, 20, 30, 40]
