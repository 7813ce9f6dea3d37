"""Merkle trees written by the signer's real append paths into a real PostgreSQL: every row's inclusion
proof and every pair of signed tree heads' consistency proof verify with our code and with independent
implementations from PyPI (tamperlog's RFC 9162 verifiers, pymerkle's own tree and inclusion verifier);
tampering makes them fail; ``auditctl witness follow`` alarms on a rewritten log."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pymerkle
from click.testing import CliRunner
from pymerkle.core import _inclusion_path_layout
from tamperlog import merkle as tamperlog

from services.auditctl.cli import main
from services.signer.appender import (
    CheckpointPolicy,
    Head,
    append_batch,
    append_prepared,
    prepare,
)
from services.signer.publisher import publish_pending
from services.signer.signing import TreeHeadsOnly
from shared import proofs
from shared.db.migrate import migration_files
from shared.keys import Ed25519Signer
from shared.merkle import Frontier, leaf_hash, verify_consistency, verify_inclusion
from shared.proofcheck import check_document
from shared.treehead import TreeHead, tree_head_message
from shared.witness import DirectoryWitness, TrustedKey
from tests.integration.signer.test_prepared import rows
from tests.unit.test_merkle_doc import doc_verifier

TENANT = "t1"


async def enrol(db: asyncpg.Connection, key: Ed25519Signer) -> None:
    """The key in signing_keys, as an operator's enrolment leaves it (the append paths do not check more)."""
    await db.execute("INSERT INTO signing_keys (key_id, public_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                     key.key_id, key.public_key)


async def build_chain(db: asyncpg.Connection, key: Ed25519Signer, total: int, batch: int = 500,
                      every_rows: int = 1_000) -> None:
    """Half the batches through the locked path, half prepared ahead, checkpointing every ``every_rows``."""
    await enrol(db, key)
    policy = CheckpointPolicy(every_rows=every_rows)
    heads: dict[str, Head] = {}
    for number, start in enumerate(range(0, total, batch)):
        items = rows(start, range(start, min(total, start + batch)), TENANT)
        if number % 2:
            prepared = await prepare(db, key, items, heads, checkpoints=policy)
            await append_prepared(db, key, prepared, group="g", topic="c", partition=0, checkpoints=policy)
        else:
            await append_batch(db, key, group="g", topic="c", partition=0, batch=items, checkpoints=policy)
            heads.clear()  # the locked path moved the heads: read them again


async def row_hashes(db: asyncpg.Connection) -> list[bytes]:
    found = await db.fetch("SELECT row_hash FROM audit_logs WHERE tenant_id = $1 ORDER BY chain_seq", TENANT)
    return [bytes(r["row_hash"]) for r in found]


async def test_every_inclusion_and_consistency_proof_verifies_independently(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    total = 10_240
    await build_chain(db, signing_key, total)
    entries = await row_hashes(db)
    assert len(entries) == total
    independent = pymerkle.InmemoryTree(algorithm="sha256")
    for entry in entries:
        independent.append_entry(entry)
    heads = await proofs.tree_heads(db, TENANT)
    sizes = [h.tree_size for h in heads]
    assert len(sizes) >= 10 and sizes == sorted(set(sizes)) and sizes[-1] >= total - 1_000
    for head in heads:
        assert head.signed_by([signing_key.public_key])
        assert head.root_hash == independent.get_state(head.tree_size)
    latest = heads[-1]
    for index in range(latest.tree_size):
        proof = await proofs.inclusion(db, TENANT, index, latest.tree_size)
        path = [bytes.fromhex(h) for h in proof["path"]]
        root = bytes.fromhex(proof["root_hash"])
        leaf = leaf_hash(entries[index])
        assert root == latest.root_hash
        assert len(path) <= 1 + 2 * latest.tree_size.bit_length()
        assert verify_inclusion(index, latest.tree_size, leaf, path, root)
        tamperlog.verify_inclusion(index, latest.tree_size, leaf, path, root)
        if index % 97 == 0:  # pymerkle rebuilds its layout per call: a sample keeps the test short
            rule, _ = _inclusion_path_layout(index + 1, latest.tree_size)
            pymerkle.verify_inclusion(leaf, root, pymerkle.InclusionProof(
                "sha256", True, latest.tree_size, index + 1, rule, [leaf, *path]))
    for first in heads:
        for second in heads:
            if first.tree_size > second.tree_size:
                continue
            proof = await proofs.consistency(db, TENANT, first.tree_size, second.tree_size)
            path = [bytes.fromhex(h) for h in proof["path"]]
            assert bytes.fromhex(proof["first_root"]) == first.root_hash
            assert bytes.fromhex(proof["second_root"]) == second.root_hash
            assert verify_consistency(first.tree_size, second.tree_size, first.root_hash, second.root_hash, path)
            tamperlog.verify_consistency(first.tree_size, first.root_hash, second.tree_size, second.root_hash, path)


async def test_a_row_edited_after_its_tree_head_fails_its_inclusion_proof(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await build_chain(db, signing_key, 300, batch=100, every_rows=100)
    pinned = [signing_key.public_key]
    record_id = await db.fetchval("SELECT id FROM audit_logs WHERE tenant_id = $1 AND chain_seq = 42", TENANT)
    document = await proofs.record_document(db, record_id)
    assert document is not None and document["tree_head"]["tree_size"] == 300
    assert all(check.ok for check in check_document(document, pinned))
    verifier = doc_verifier()  # the under-100-line verifier of docs/auditing.md
    assert verifier["check_inclusion"](document, pinned)
    # Content edited by someone with superuser rights: the row no longer hashes to its leaf.
    await db.execute("SET session_replication_role = replica")  # a superuser, past any trigger
    await db.execute("UPDATE audit_logs SET input_tokens = 999 WHERE id = $1", record_id)
    edited = await proofs.record_document(db, record_id)
    assert edited is not None
    failed = [check.name for check in check_document(edited, pinned) if not check.ok]
    assert any("row_hash" in name for name in failed) and any("inclusion path" in name for name in failed)
    assert not verifier["check_inclusion"](edited, pinned)
    # Edited and re-hashed (row_hash rewritten, signature forged aside): the leaf still leads to another root.
    new_hash = bytes(32)
    await db.execute("UPDATE audit_logs SET row_hash = $2 WHERE id = $1", record_id, new_hash)
    rehashed = await proofs.record_document(db, record_id)
    assert rehashed is not None
    assert any("inclusion path" in c.name and not c.ok for c in check_document(rehashed, pinned))
    consistency = await proofs.consistency_document(db, TENANT, 100, 300)
    assert verifier["check_consistency"](consistency, TENANT, pinned)


async def _cli(database_url: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """auditctl on a thread of its own: it runs its own event loop. No witness unless ``env`` names one."""
    def invoke() -> tuple[int, str]:
        result = CliRunner().invoke(main, list(args), catch_exceptions=False,
                                    env={"DATABASE_URL": database_url, "CHECKPOINT_WITNESS_DIR": "", **(env or {})})
        return result.exit_code, result.output

    return await asyncio.to_thread(invoke)


async def _rewrite_history(db: asyncpg.Connection, key: Ed25519Signer, seq: int) -> None:
    """What an operator holding the signing key could do: change one old row, rebuild the whole tree over the
    changed chain, and sign new tree heads over it."""
    await db.execute("SET session_replication_role = replica")  # a superuser, past any trigger
    await db.execute("UPDATE audit_logs SET row_hash = $3 WHERE tenant_id = $1 AND chain_seq = $2",
                     TENANT, seq, b"\x42" * 32)
    frontier, records = Frontier(), []
    for index, entry in enumerate(await row_hashes(db)):
        frontier, completed = frontier.append(entry)
        records.append((TENANT, index, completed))
    await db.execute("DELETE FROM merkle_subtrees WHERE tenant_id = $1", TENANT)
    await db.copy_records_to_table("merkle_subtrees", records=records, columns=["tenant_id", "leaf_index", "hashes"])
    await db.execute("UPDATE chain_heads SET merkle_frontier = $2 WHERE tenant_id = $1", TENANT, frontier.to_bytes())
    now = datetime.now(UTC)
    await db.execute(
        "INSERT INTO chain_checkpoints (tenant_id, chain_seq, head_hash, created_at, key_id, signature, tree_root,"
        " tree_signature) SELECT tenant_id, head_seq + 0, head_hash, $2, $3, $4, $5, $6 FROM chain_heads"
        " WHERE tenant_id = $1 ON CONFLICT (tenant_id, chain_seq) DO UPDATE SET tree_root = EXCLUDED.tree_root,"
        " tree_signature = EXCLUDED.tree_signature, created_at = EXCLUDED.created_at",
        TENANT, now, key.key_id, bytes(64), frontier.root(),
        key.sign(tree_head_message(TENANT, frontier.size, frontier.root(), now, key.key_id)))


async def test_witness_follow_accepts_growth_and_alarms_on_a_rewritten_log(
    db: asyncpg.Connection, signing_key: Ed25519Signer, database_url: str, tmp_path: Path
) -> None:
    state, key = tmp_path / "kept.json", base64.b64encode(signing_key.public_key).decode()
    await build_chain(db, signing_key, 200, batch=100, every_rows=100)
    code, output = await _cli(database_url, "witness", "follow", "--tenant", TENANT, "--state", str(state),
                        "--trusted-key", key, "--once")
    assert code == 0, output
    assert "tree_size=200" in output
    assert TreeHead.from_dict(json.loads(state.read_text())).tree_size == 200
    # The log grows honestly: the new head is consistent with the kept one.
    items = rows(200, range(200, 300), TENANT)
    await append_batch(db, signing_key, group="g", topic="c", partition=0, batch=items,
                       checkpoints=CheckpointPolicy(every_rows=100))
    code, output = await _cli(database_url, "witness", "follow", "--tenant", TENANT, "--state", str(state),
                        "--trusted-key", key, "--once")
    assert code == 0 and "tree_size=300" in output, output
    # History rewritten under a validly signed new head: the consistency proof cannot hold.
    await append_batch(db, signing_key, group="g", topic="c", partition=0, batch=rows(300, range(300, 350), TENANT))
    await _rewrite_history(db, signing_key, 17)
    code, output = await _cli(database_url, "witness", "follow", "--tenant", TENANT, "--state", str(state),
                        "--trusted-key", key, "--once")
    assert code == 2, output
    assert "ALARM" in output and "rewritten" in output
    # A head signed by a key that is not pinned is an alarm too.
    code, output = await _cli(database_url, "witness", "follow", "--tenant", TENANT, "--state", str(tmp_path / "new.json"),
                        "--trusted-key", base64.b64encode(Ed25519Signer.generate().public_key).decode(),
                        "--once")
    assert code == 2 and "not signed by a pinned key" in output, output


async def test_proof_cli_and_offline_check(
    db: asyncpg.Connection, signing_key: Ed25519Signer, database_url: str, tmp_path: Path
) -> None:
    await build_chain(db, signing_key, 250, batch=50, every_rows=100)
    key = base64.b64encode(signing_key.public_key).decode()
    record_id = await db.fetchval("SELECT id FROM audit_logs WHERE tenant_id = $1 AND chain_seq = 7", TENANT)
    sizes = [head.tree_size for head in await proofs.tree_heads(db, TENANT)]
    assert len(sizes) >= 2
    code, output = await _cli(database_url, "proof", "inclusion", "--record", str(record_id), "--tree-size",
                              str(sizes[0]))
    assert code == 0, output
    inclusion = tmp_path / "inclusion.json"
    inclusion.write_text(output)
    assert json.loads(output)["inclusion"]["tree_size"] == sizes[0]
    code, output = await _cli(database_url, "proof", "check", str(inclusion), "--trusted-key", key)
    assert code == 0 and "FAIL" not in output, output
    code, output = await _cli(database_url, "proof", "consistency", "--tenant", TENANT, "--first", str(sizes[0]),
                              "--second", str(sizes[-1]))
    assert code == 0, output
    consistency = tmp_path / "consistency.json"
    consistency.write_text(output)
    keys = tmp_path / "keys.jsonl"
    keys.write_text(json.dumps({"public_key": key}) + "\n")
    code, output = await _cli(database_url, "proof", "check", str(consistency), "--keys", str(keys))
    assert code == 0 and "FAIL" not in output, output
    # Another key is not the pinned one: both proofs fail offline.
    stranger = base64.b64encode(Ed25519Signer.generate().public_key).decode()
    assert (await _cli(database_url, "proof", "check", str(inclusion), "--trusted-key", stranger))[0] == 1
    assert (await _cli(database_url, "proof", "check", str(consistency), "--trusted-key", stranger))[0] == 1
    code, output = await _cli(database_url, "proof", "consistency", "--tenant", TENANT, "--first", "1",
                              "--second", "9999")
    assert code == 1 and "beyond" in output


async def test_signing_per_batch_covers_unsigned_rows_with_each_batch_tree_head(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    """SIGNING_MODE=batch as the signer runs it: no row signatures, a signed tree head per batch."""
    await enrol(db, signing_key)
    policy, heads = CheckpointPolicy(every_rows=1), {}  # type: ignore[var-annotated]
    for start in range(0, 90, 30):
        prepared = await prepare(db, signing_key, rows(start, range(start, start + 30), TENANT), heads,
                                 checkpoints=policy, batch_signer=TreeHeadsOnly())
        await append_prepared(db, signing_key, prepared, group="g", topic="c", partition=0, checkpoints=policy)
    assert await db.fetchval("SELECT count(*) FROM audit_logs WHERE length(signature) > 0") == 0
    assert [h.tree_size for h in await proofs.tree_heads(db, TENANT)] == [30, 60, 90]
    pinned, verifier = [signing_key.public_key], doc_verifier()
    for seq in (1, 30, 31, 90):
        record_id = await db.fetchval("SELECT id FROM audit_logs WHERE chain_seq = $1", seq)
        batch_head = ((seq - 1) // 30 + 1) * 30
        for size in (batch_head, None):
            document = await proofs.record_document(db, record_id, size)
            assert document is not None
            assert all(c.ok for c in check_document(document, pinned)), check_document(document, pinned)
            assert verifier["check_inclusion"](document, pinned)


async def _every_proof(db: asyncpg.Connection, size: int) -> list[dict[str, object]]:
    """Inclusion proofs of every leaf and consistency proofs of a spread of sizes, against a tree of ``size``."""
    found: list[dict[str, object]] = [await proofs.inclusion(db, TENANT, leaf, size) for leaf in range(size)]
    for first in (1, 2, 3, 7, 8, 255, 256, 257, 400, size - 1):
        found.append(await proofs.consistency(db, TENANT, first, size))
    return found


async def test_the_migration_builds_the_tree_of_chains_written_before_it(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    """0800's backfill, run over chains whose tree is missing, gives what the signer writes, and a record for
    every other leaf besides, as the signer wrote before it left them out. Proofs are the same from either, or
    from a mix (the records of even leaves only left out, as the signer wrote them for a while, included)."""
    await build_chain(db, signing_key, 777, batch=100)
    stored = await db.fetch("SELECT leaf_index, hashes FROM merkle_subtrees ORDER BY leaf_index")
    assert [r["leaf_index"] for r in stored] == list(range(3, 777, 4))
    frontier = await db.fetchval("SELECT merkle_frontier FROM chain_heads WHERE tenant_id = $1", TENANT)
    signer_proofs = await _every_proof(db, 777)
    await db.execute("SET session_replication_role = replica")  # a superuser, past any trigger
    await db.execute("DELETE FROM merkle_subtrees")
    await db.execute("UPDATE chain_heads SET merkle_frontier = ''::bytea")
    text = dict(migration_files())["0800_merkle_trees"]
    await db.execute(text[text.index("DO $$"):])
    backfilled = await db.fetch("SELECT leaf_index, hashes FROM merkle_subtrees ORDER BY leaf_index")
    assert len(backfilled) == 777
    assert [r for r in backfilled if r["leaf_index"] % 4 == 3] == stored
    rebuilt = Frontier()
    for index, entry in enumerate(await row_hashes(db)):
        rebuilt, completed = rebuilt.append(entry)
        assert bytes(backfilled[index]["hashes"]) == completed
    assert await db.fetchval("SELECT merkle_frontier FROM chain_heads WHERE tenant_id = $1", TENANT) == frontier
    assert await _every_proof(db, 777) == signer_proofs
    assert (await proofs.audit_tree(db, TENANT)).ok
    await db.execute("DELETE FROM merkle_subtrees WHERE leaf_index >= 400 AND leaf_index % 2 = 0")
    assert await _every_proof(db, 777) == signer_proofs
    await db.execute("DELETE FROM merkle_subtrees WHERE leaf_index < 200 AND leaf_index % 4 <> 3")
    assert await _every_proof(db, 777) == signer_proofs
    assert (await proofs.audit_tree(db, TENANT)).ok


async def test_audit_tree_recomputes_the_tree_and_names_what_differs(
    db: asyncpg.Connection, signing_key: Ed25519Signer, database_url: str
) -> None:
    await build_chain(db, signing_key, 400, batch=100, every_rows=100)
    key = base64.b64encode(signing_key.public_key).decode()
    code, output = await _cli(database_url, "proof", "audit-tree", "--tenant", TENANT, "--trusted-key", key)
    assert code == 0 and "OK tenant=t1 leaves=400 tree_heads=4" in output, output
    stranger = base64.b64encode(Ed25519Signer.generate().public_key).decode()
    code, output = await _cli(database_url, "proof", "audit-tree", "--tenant", TENANT, "--trusted-key", stranger)
    assert code == 1 and "not signed by a pinned key" in output
    await db.execute("SET session_replication_role = replica")  # a superuser, past any trigger
    await db.execute("UPDATE merkle_subtrees SET hashes = $2 WHERE tenant_id = $1 AND leaf_index = 7", TENANT,
                     bytes(96))
    code, output = await _cli(database_url, "proof", "audit-tree", "--tenant", TENANT, "--trusted-key", key)
    assert code == 1 and "leaf 7: stored subtrees differ" in output, output
    await db.execute("DELETE FROM merkle_subtrees WHERE tenant_id = $1 AND leaf_index = 11", TENANT)
    assert "leaf 11: stored subtrees missing" in (await proofs.audit_tree(db, TENANT)).problems
    await db.execute("UPDATE audit_logs SET row_hash = $2 WHERE tenant_id = $1 AND chain_seq = 150", TENANT, bytes(32))
    report = await proofs.audit_tree(db, TENANT, [signing_key.public_key])
    # Leaf 149 has no record of its own; the first record with a subtree over it is leaf 151's.
    assert any("leaf 151: stored subtrees differ" in p for p in report.problems), report
    assert any("tree head 200: signed root differs" in p for p in report.problems)
    await db.execute("DELETE FROM audit_logs WHERE tenant_id = $1 AND chain_seq > 350", TENANT)
    report = await proofs.audit_tree(db, TENANT)
    assert any("tree heads beyond the 350 rows" in p for p in report.problems), report
    assert any("rows end at sequence 350 but the chain head is at 400" in p for p in report.problems), report


async def test_tree_heads_reach_the_witness_and_its_pinned_keys_check_proofs(
    db: asyncpg.Connection, signing_key: Ed25519Signer, database_url: str, tmp_path: Path
) -> None:
    """The signer's checkpoint publisher carries each tree head to the witness; ``proof check`` and ``witness
    follow`` take the witness's pinned keys when none are given, and a head the log serves that differs from
    the witness's is an alarm."""
    witness = DirectoryWitness(tmp_path / "witness")
    witness.enroll(TrustedKey(signing_key.key_id, signing_key.public_key, datetime.now(UTC)))
    await build_chain(db, signing_key, 300, batch=100, every_rows=100)
    await publish_pending(db, witness)
    held = [TreeHead.from_checkpoint_record(r) for r in witness.checkpoint_records()]
    assert [h.tree_size for h in held if h] == [h.tree_size for h in await proofs.tree_heads(db, TENANT)]
    assert all(h is not None and h.signed_by([signing_key.public_key]) for h in held)
    env = {"CHECKPOINT_WITNESS_DIR": str(witness.root)}
    record_id = await db.fetchval("SELECT id FROM audit_logs WHERE tenant_id = $1 AND chain_seq = 5", TENANT)
    code, output = await _cli(database_url, "proof", "inclusion", "--record", str(record_id), env=env)
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(output)
    code, output = await _cli(database_url, "proof", "check", str(proof_file), env=env)
    assert code == 0 and "FAIL" not in output, output
    code, output = await _cli(database_url, "witness", "follow", "--tenant", TENANT, "--state",
                              str(tmp_path / "kept.json"), "--once", env=env)
    assert code == 0 and "tree_size=300" in output, output
    # The log now serves, for a size the witness holds, a head re-signed over another root (the key was
    # stolen, say): the witness's copy gives it away even for a follower that never kept that size.
    last = (await proofs.tree_heads(db, TENANT))[-1]
    forged_root = hashlib.sha256(b"another history").digest()
    forged = tree_head_message(TENANT, last.tree_size, forged_root, last.timestamp, last.key_id)
    await db.execute("SET session_replication_role = replica")  # a superuser, past any trigger
    await db.execute("UPDATE chain_checkpoints SET tree_root = $3, tree_signature = $4 WHERE tenant_id = $1"
                     " AND chain_seq = $2", TENANT, last.tree_size, forged_root, signing_key.sign(forged))
    code, output = await _cli(database_url, "witness", "follow", "--tenant", TENANT, "--state",
                              str(tmp_path / "fresh.json"), "--once", env=env)
    assert code == 2 and "differs from the one the witness holds" in output, output
