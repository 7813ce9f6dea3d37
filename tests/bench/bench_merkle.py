"""Merkle proof benchmark: bytes per row of the stored tree, and the latency of proofs at a large tree size.

Usage: python -m tests.bench.bench_merkle [--leaves 1000000] [--proofs 2000] [--tree-only] [--json out.json]
(``make bench-merkle``; ``BENCH_ARGS="--leaves 10000000 --tree-only"`` for the 10M-row figures)

A fresh embedded PostgreSQL (or a fresh database on the server of DATABASE_URL) gets one tenant's tree of
``--leaves`` leaves, stored as the signer stored it before it left out the records of even leaves (a record
for every leaf in ``merkle_subtrees``, which readers use as they find them, and the frontier in
``chain_heads``), with a signed tree head of the whole tree, and (unless ``--tree-only``) as many audit rows,
seeded as bench-reporter seeds them (placeholder hashes: the leaves are synthetic row hashes, and with a
record for every leaf the proofs never read audit_logs). The signer now writes about half these records, so
the bytes per row printed are an upper bound. Then:
- the tree's size on disk (heap, TOAST and primary key) per row, after VACUUM ANALYZE;
- p50/p99 of inclusion proofs of random leaves against the whole tree, as the reporter computes them
  (shared.proofs.inclusion: one query, the fold), each checked and its length compared with 1 + 2*log2(n);
- p50/p99 of the reporter's whole ``GET /api/v1/audit/records/{id}/proof`` of a random row (row, key,
  checkpoint, inclusion proof and tree head; with an auditor's token, and its access event acknowledged by
  a broker before the answer, as in production) and of ``GET /api/v1/audit/consistency`` from a random size
  to the whole tree, through the reporter's ASGI app in this process, each checked.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from deploy.local.infra import start_broker
from services.reporter.app import create_app
from services.reporter.settings import ReporterSettings
from shared import proofs
from shared.db.migrate import apply_migrations
from shared.db.pool import connect
from shared.kafka import TopicSpec, ensure_topics
from shared.keys import Ed25519Signer
from shared.licensing import LicenseVerifier
from shared.merkle import Frontier, leaf_hash, verify_consistency, verify_inclusion
from shared.messages.auth import MessageKey
from shared.reporting_tokens import AUDITOR, issue_token
from shared.treehead import tree_head_message
from tests.bench.bench_reporter import CHUNK, DAYS, ORG, SEED_SQL, SESSION_SHAPE, SESSIONS, USERS
from tests.bench.bench_reporter import TENANT as REPORTER_TENANT
from tests.bench.databases import BenchDatabase
from tests.bench.report import publish

TENANT = REPORTER_TENANT
_COPY_CHUNK = 100_000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def _seed_rows(conn: Any, rows: int) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for first in range(0, rows, CHUNK):
        await conn.execute(SEED_SQL, TENANT, ORG, bytes(32), bytes(64), first, min(rows, first + CHUNK), USERS,
                           SESSION_SHAPE, start, DAYS * 86_400.0, SESSIONS)


async def _build(conn: Any, leaves: int) -> tuple[Frontier, list[bytes]]:
    """The tree as the signer writes it, COPYed in chunks; returns the final frontier and the entries."""
    frontier, records, entries = Frontier(), [], []
    for index in range(leaves):
        entry = hashlib.sha256(index.to_bytes(8, "big")).digest()
        entries.append(entry)
        frontier, completed = frontier.append(entry)
        records.append((TENANT, index, completed))
        if len(records) == _COPY_CHUNK:
            await conn.copy_records_to_table("merkle_subtrees", records=records,
                                             columns=["tenant_id", "leaf_index", "hashes"])
            records = []
    if records:
        await conn.copy_records_to_table("merkle_subtrees", records=records, columns=["tenant_id", "leaf_index", "hashes"])
    await conn.execute(
        "INSERT INTO chain_heads (tenant_id, head_seq, head_hash, merkle_frontier) VALUES ($1, $2, $3, $4)",
        TENANT, leaves, entries[-1], frontier.to_bytes())
    return frontier, entries


async def run(leaves: int, samples: int, tree_only: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-merkle-"))
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if bootstrap else start_broker(log_file=work / "broker.log")
    bootstrap = bootstrap or (broker.bootstrap if broker else "")
    database = await BenchDatabase.open("bench_merkle", work)
    dsn = database.dsn
    try:
        conn = await connect(dsn)
        await apply_migrations(conn)
        started = time.perf_counter()
        frontier, entries = await _build(conn, leaves)
        build_seconds = time.perf_counter() - started
        signer = Ed25519Signer.generate()
        now = datetime.now(UTC)
        await conn.execute("INSERT INTO signing_keys (key_id, public_key) VALUES ($1, $2)", signer.key_id,
                           signer.public_key)
        await conn.execute(
            "INSERT INTO chain_checkpoints (tenant_id, chain_seq, head_hash, created_at, key_id, signature,"
            " tree_root, tree_signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            TENANT, leaves, entries[-1], now, signer.key_id, bytes(64), frontier.root(),
            signer.sign(tree_head_message(TENANT, leaves, frontier.root(), now, signer.key_id)))
        if not tree_only:
            await _seed_rows(conn, leaves)
        await conn.execute("VACUUM (ANALYZE)")
        table = await conn.fetchval("SELECT pg_table_size('merkle_subtrees')")
        index = await conn.fetchval("SELECT pg_indexes_size('merkle_subtrees')")
        root = frontier.root()

        rng = random.Random(16)
        inclusion_ms, longest = [], 0
        for _ in range(samples):
            leaf = rng.randrange(leaves)
            t0 = time.perf_counter()
            proof = await proofs.inclusion(conn, TENANT, leaf, leaves)
            inclusion_ms.append((time.perf_counter() - t0) * 1000)
            path = [bytes.fromhex(h) for h in proof["path"]]
            assert verify_inclusion(leaf, leaves, leaf_hash(entries[leaf]), path, root)
            longest = max(longest, len(path))
        bound = 1 + 2 * math.log2(leaves)
        assert longest <= bound

        _, token = await issue_token(conn, tenant_id=TENANT, org_id=ORG, role=AUDITOR, user_email=None,
                                     expires_at=None, created_by="bench")
        headers = {"Authorization": f"Bearer {token}"}
        access_topic = f"bench-access-{uuid.uuid4().hex[:8]}"
        await ensure_topics(bootstrap, [TopicSpec(access_topic, 1)])
        settings = ReporterSettings(database_url=dsn, kafka_bootstrap_servers=bootstrap, topic_canonical=access_topic)
        app = create_app(settings, LicenseVerifier.from_public_keys([Ed25519Signer.generate().public_key]),
                         background_work=False, access_key=MessageKey.of(os.urandom(32), "reporter"))
        consistency_ms, consistency_longest, record_ms = [], 0, []
        ids = [] if tree_only else [r["id"] for r in await conn.fetch(
            "SELECT id FROM audit_logs TABLESAMPLE SYSTEM (1) LIMIT $1", samples)]
        async with app.router.lifespan_context(app):
            state = app.state.reporter
            while state.pool is None or not state.revocations_loaded or not state.trail.ready:
                await asyncio.sleep(0.05)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://reporter") as client:
                for record_id in ids:
                    t0 = time.perf_counter()
                    response = await client.get(f"/api/v1/audit/records/{record_id}/proof", headers=headers)
                    record_ms.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, response.text
                    document = response.json()
                    inclusion = document["inclusion"]
                    path = [bytes.fromhex(h) for h in inclusion["path"]]
                    leaf_digest = leaf_hash(entries[document["chain_seq"] - 1])
                    assert verify_inclusion(inclusion["leaf_index"], leaves, leaf_digest, path, root)
                    assert document["tree_head"]["root_hash"] == root.hex()
                for _ in range(samples):
                    first = rng.randrange(1, leaves)
                    t0 = time.perf_counter()
                    response = await client.get("/api/v1/audit/consistency", params={"first": first, "second": leaves},
                                                headers=headers)
                    consistency_ms.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, response.text
                    document = response.json()
                    path = [bytes.fromhex(h) for h in document["path"]]
                    assert bytes.fromhex(document["second_root"]) == root
                    assert verify_consistency(first, leaves, bytes.fromhex(document["first_root"]), root, path)
                    consistency_longest = max(consistency_longest, len(path))
        await conn.close()
    finally:
        if broker is not None:
            broker.stop()
        await database.close()
    return {
        "leaves": leaves,
        "build_seconds": build_seconds,
        "bytes_per_row": (table + index) / leaves,
        "table_bytes_per_row": table / leaves,
        "index_bytes_per_row": index / leaves,
        "inclusion_p50_ms": statistics.median(inclusion_ms),
        "inclusion_p99_ms": _percentile(inclusion_ms, 0.99),
        "inclusion_longest_path": longest,
        "hash_bound_1_plus_2log2n": bound,
        "record_proof_http_p50_ms": statistics.median(record_ms) if record_ms else None,
        "record_proof_http_p99_ms": _percentile(record_ms, 0.99) if record_ms else None,
        "record_proof_samples": len(record_ms),
        "consistency_http_p50_ms": statistics.median(consistency_ms),
        "consistency_http_p99_ms": _percentile(consistency_ms, 0.99),
        "consistency_longest_path": consistency_longest,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=2_000)
    parser.add_argument("--tree-only", action="store_true", help="no audit rows: the tree and its proofs only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(run(args.leaves, args.proofs, args.tree_only))
    record = ("" if result["record_proof_http_p99_ms"] is None else
              f"a row's whole proof over HTTP (GET /api/v1/audit/records/{{id}}/proof): "
              f"p50 {result['record_proof_http_p50_ms']:.2f} ms, p99 {result['record_proof_http_p99_ms']:.2f} ms\n")
    publish(result, (
        f"tree of {result['leaves']:,} rows: {result['bytes_per_row']:.0f} bytes/row stored "
        f"({result['table_bytes_per_row']:.0f} table + {result['index_bytes_per_row']:.0f} primary key)\n"
        f"inclusion proof: p50 {result['inclusion_p50_ms']:.2f} ms, p99 {result['inclusion_p99_ms']:.2f} ms, "
        f"at most {result['inclusion_longest_path']} hashes (bound {result['hash_bound_1_plus_2log2n']:.1f})\n"
        f"{record}consistency proof over HTTP: p50 {result['consistency_http_p50_ms']:.2f} ms, "
        f"p99 {result['consistency_http_p99_ms']:.2f} ms, at most {result['consistency_longest_path']} hashes"
    ), args.json)


if __name__ == "__main__":
    main()
