"""The signer process on the real broker and database, killed mid-load and restarted: the Merkle tree it
leaves is the tree of its chain, and every row's inclusion proof and every pair of signed tree heads'
consistency proof verify with tamperlog (an independent RFC 9162 implementation) and with our own."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pymerkle
from tamperlog import merkle as tamperlog

from shared import proofs
from shared.merkle import leaf_hash, verify_consistency, verify_inclusion
from shared.treehead import TreeHead
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline
from tests.e2e.test_signer_faults import _count, _events, _produce, _wait_rows

TENANT = "t-merkle"


async def _covered(db: asyncpg.Connection, rows: int, timeout: float = 60) -> list[TreeHead]:
    """The signed tree heads, once one covers every row (the quiet-chain checkpoint takes a second)."""
    deadline = time.monotonic() + timeout
    while True:
        heads = await proofs.tree_heads(db, TENANT)
        if (heads and heads[-1].tree_size == rows) or time.monotonic() > deadline:
            return heads
        await asyncio.sleep(0.2)


async def test_proofs_of_a_10000_row_chain_written_by_a_killed_and_restarted_signer(
    infra: Infra, database_url: str, topics: Topics, tmp_path: Path, db: asyncpg.Connection
) -> None:
    events = _events(12_000, (TENANT,))
    await _produce(infra.bootstrap, topics.canonical, events)
    pipeline = Pipeline(database_url, infra.bootstrap, topics, tmp_path,
                        extra_env={"SIGNER_MAX_BATCH": "300", "CHECKPOINT_EVERY_SECONDS": "1"})
    pipeline.start("signer")
    try:
        assert await _wait_rows(db, 1, timeout=60) >= 1
        pipeline.kill("signer")
        pipeline.start("signer")
        assert await _wait_rows(db, len(events)) == len(events)
        heads = await _covered(db, len(events))
    finally:
        pipeline.stop()
    assert await _count(db) == len(events)
    assert len(heads) >= 10 and heads[-1].tree_size == len(events)
    key = bytes(await db.fetchval("SELECT public_key FROM signing_keys"))
    entries = [bytes(r["row_hash"]) for r in await db.fetch(
        "SELECT row_hash FROM audit_logs WHERE tenant_id = $1 ORDER BY chain_seq", TENANT)]
    independent = pymerkle.InmemoryTree(algorithm="sha256")
    for entry in entries:
        independent.append_entry(entry)
    for head in heads:
        assert head.signed_by([key]) and head.root_hash == independent.get_state(head.tree_size)
    size, root = heads[-1].tree_size, heads[-1].root_hash
    for index, entry in enumerate(entries):
        proof = await proofs.inclusion(db, TENANT, index, size)
        path = [bytes.fromhex(h) for h in proof["path"]]
        assert verify_inclusion(index, size, leaf_hash(entry), path, root)
        tamperlog.verify_inclusion(index, size, leaf_hash(entry), path, root)
    for i, first in enumerate(heads):
        for second in heads[i:]:
            proof = await proofs.consistency(db, TENANT, first.tree_size, second.tree_size)
            path = [bytes.fromhex(h) for h in proof["path"]]
            assert verify_consistency(first.tree_size, second.tree_size, first.root_hash, second.root_hash, path)
            tamperlog.verify_consistency(first.tree_size, first.root_hash, second.tree_size, second.root_hash, path)


async def test_a_signer_in_batch_mode_signs_a_tree_head_per_batch(
    infra: Infra, database_url: str, topics: Topics, tmp_path: Path, db: asyncpg.Connection
) -> None:
    events = _events(2_000, (TENANT,))
    await _produce(infra.bootstrap, topics.canonical, events)
    pipeline = Pipeline(database_url, infra.bootstrap, topics, tmp_path,
                        extra_env={"SIGNING_MODE": "batch", "SIGNER_MAX_BATCH": "250"})
    pipeline.start("signer")
    try:
        assert await _wait_rows(db, len(events)) == len(events)
        heads = await _covered(db, len(events), timeout=10)
    finally:
        pipeline.stop()
    assert await db.fetchval("SELECT count(*) FROM audit_logs WHERE length(signature) > 0") == 0
    assert heads and heads[-1].tree_size == len(events)
    assert len(heads) >= len(events) // 250  # at least one per batch
    key = bytes(await db.fetchval("SELECT public_key FROM signing_keys"))
    assert all(head.signed_by([key]) for head in heads)
