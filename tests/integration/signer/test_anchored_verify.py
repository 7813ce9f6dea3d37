"""The attacks of issue "Integrity against an adversary", each caught by a plain ``auditctl verify`` (what
``make verify`` runs) with the trust anchors it finds by default: two chains of 12,000 rows checked in the
default ranges of 5,000 by one process per core, checkpoints published to a witness directory by the
signer's publisher, the signing key enrolled (pinned) by an operator."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from services.signer.appender import CheckpointPolicy, OffsetEvent, append_batch
from services.signer.publisher import publish_pending
from shared.chain import row_hash, stored_canonical_bytes
from shared.enrollment import enroll, record_signing_key
from shared.keys import Ed25519Signer
from shared.witness import DirectoryWitness
from tests.integration.signer.test_append import event

ROWS = 12_000
TENANTS = ("t1", "t2")


@dataclass
class Stack:
    database_url: str
    state_dir: Path
    key: Ed25519Signer

    def verify(self, *args: str, witness: bool = True) -> subprocess.CompletedProcess[str]:
        """``make verify``: the CLI through the local stack's wrapper, with var/ as its state directory."""
        env = {**os.environ, "DATABASE_URL": self.database_url, "LOCAL_STATE_DIR": str(self.state_dir)}
        env.pop("CHECKPOINT_WITNESS_DIR", None)
        env.pop("CHECKPOINT_WITNESS_S3_BUCKET", None)
        if not witness:
            env["CHECKPOINT_WITNESS_DIR"] = ""
        return subprocess.run(
            [sys.executable, "-m", "deploy.local.stack", "with-db", "--",
             sys.executable, "-m", "services.auditctl", "verify", "--quiet", *args],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )


@pytest.fixture
async def stack(database_url: str, db: asyncpg.Connection, tmp_path: Path) -> Stack:
    key = Ed25519Signer.generate()
    # Where `make run` keeps them: var/witness holds the checkpoints and the pinned keys.
    witness = DirectoryWitness(tmp_path / "witness")
    await enroll(db, witness, key.public_key, "test operator")
    policy = CheckpointPolicy(every_rows=1_000)
    offset = 0
    for start in range(0, ROWS, 2_000):
        batch = []
        for tenant in TENANTS:
            for n in range(start, start + 2_000):
                batch.append(OffsetEvent(offset, event(n, tenant)))
                offset += 1
        await append_batch(db, key, group="g", topic="c", partition=0, batch=batch, checkpoints=policy)
    await publish_pending(db, witness)
    return Stack(database_url, tmp_path, key)


def _lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.splitlines()


async def test_the_anchors_are_named_and_an_intact_stack_verifies(stack: Stack) -> None:
    result = stack.verify()
    assert result.returncode == 0, result.stdout + result.stderr
    first, *reports = _lines(result)
    assert first.startswith("anchors: 12 checkpoint(s) from the witness directory ")
    assert "1 key(s) pinned in the witness directory" in first
    assert reports == [f"OK tenant={t} rows={ROWS} head={ROWS} checkpoints=6 erased=0" for t in TENANTS]
    bare = stack.verify(witness=False)
    assert bare.returncode == 0 and _lines(bare)[0].startswith("anchors: NONE - trusting the database itself")


async def test_a_whole_range_deleted_is_caught(stack: Stack, db: asyncpg.Connection) -> None:
    await db.execute("DELETE FROM audit_logs WHERE tenant_id = 't1' AND chain_seq BETWEEN 5001 AND 10000")
    for result in (stack.verify(), stack.verify(witness=False)):
        assert result.returncode == 1
        assert "BROKEN tenant=t1 seq=5001 kind=deleted" in result.stdout, result.stdout + result.stderr
        assert f"OK tenant=t2 rows={ROWS}" in result.stdout


async def test_a_tail_cut_with_head_and_checkpoints_rewound_is_caught_by_the_witness(
    stack: Stack, db: asyncpg.Connection
) -> None:
    keep = ROWS - 1_500
    await db.execute("DELETE FROM audit_logs WHERE tenant_id = 't1' AND chain_seq > $1", keep)
    head = await db.fetchval("SELECT row_hash FROM audit_logs WHERE tenant_id = 't1' AND chain_seq = $1", keep)
    await db.execute("UPDATE chain_heads SET head_seq = $1, head_hash = $2 WHERE tenant_id = 't1'", keep, head)
    await db.execute("DELETE FROM chain_checkpoints WHERE tenant_id = 't1' AND chain_seq > $1", keep)
    await db.execute("DELETE FROM checkpoint_witness_cursor")
    # The database alone now tells a consistent story...
    assert stack.verify(witness=False).returncode == 0
    # ...which the witness contradicts.
    result = stack.verify()
    assert result.returncode == 1
    assert f"BROKEN tenant=t1 seq={keep + 1} kind=truncated" in result.stdout, result.stdout + result.stderr


async def test_a_key_enrolled_in_the_database_only_is_untrusted(stack: Stack, db: asyncpg.Connection) -> None:
    """Whoever holds a database credential enrols a key of their own and re-signs history from row 7,001 on."""
    intruder = Ed25519Signer.generate()
    await record_signing_key(db, intruder.public_key)
    await db.execute("INSERT INTO key_activations (tenant_id, from_seq, key_id) VALUES ('t1', 7001, $1)",
                     intruder.key_id)
    prev = await db.fetchval("SELECT row_hash FROM audit_logs WHERE tenant_id = 't1' AND chain_seq = 7000")
    rows = await db.fetch("SELECT * FROM audit_logs WHERE tenant_id = 't1' AND chain_seq > 7000 ORDER BY chain_seq")
    for record in rows:
        row = {**dict(record), "signing_key_id": intruder.key_id, "prev_hash": bytes(prev)}
        digest = row_hash(bytes(prev), stored_canonical_bytes(row), row["hash_version"])
        await db.execute(
            "UPDATE audit_logs SET signing_key_id = $2, prev_hash = $3, row_hash = $4, signature = $5 WHERE id = $1",
            record["id"], intruder.key_id, bytes(prev), digest, intruder.sign(digest),
        )
        prev = digest
    await db.execute("UPDATE chain_heads SET head_hash = $1 WHERE tenant_id = 't1'", prev)
    result = stack.verify()
    assert result.returncode == 1
    assert "BROKEN tenant=t1 seq=7001 kind=bad_signature: untrusted key " in result.stdout, result.stdout


async def test_a_rewound_head_is_caught_without_any_anchor(stack: Stack, db: asyncpg.Connection) -> None:
    head = await db.fetchval("SELECT row_hash FROM audit_logs WHERE tenant_id = 't2' AND chain_seq = 11000")
    await db.execute("UPDATE chain_heads SET head_seq = 11000, head_hash = $1 WHERE tenant_id = 't2'", head)
    result = stack.verify(witness=False)
    assert result.returncode == 1
    assert "BROKEN tenant=t2 seq=11001 kind=head_mismatch" in result.stdout, result.stdout
