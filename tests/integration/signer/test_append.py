"""The signer's append against a real PostgreSQL: chaining, dedupe, offsets and the single-writer guarantee."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from services.signer.appender import OffsetEvent, append_batch
from shared.canonical import CanonicalEvent
from shared.db.pool import connect
from shared.enrollment import record_signing_key
from shared.keys import Ed25519Signer
from shared.verify import published_keys, verify_tenant

T0 = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


def event(n: int, tenant: str = "t1") -> CanonicalEvent:
    return CanonicalEvent(
        event_id=f"{tenant}-ev-{n}",
        tenant_id=tenant,
        org_id="acme",
        license_id="lic",
        plane="claude_code",
        event_type="api_request",
        event_time=T0 + timedelta(seconds=n),
        received_at=T0 + timedelta(seconds=n, microseconds=7),
        session_id="s1",
        correlation_id="p1",
        event_sequence=n,
        model="claude-opus-5-5",
        input_tokens=10,
        output_tokens=5,
        tokens_used=15,
        cost=Decimal("0.006850"),
        content={"prompt": "hi <EMAIL>"},
        content_lengths={"prompt": 20},
        redacted_fields={"prompt": {"EMAIL": 1}},
        content_captured=True,
        attributes={"terminal.type": "xterm", "ratio": 0.25, "big": 2**60},
    )


async def _append(conn: asyncpg.Connection, signer: Ed25519Signer, items: list[OffsetEvent], partition: int = 0):  # type: ignore[no-untyped-def]
    return await append_batch(conn, signer, group="g", topic="canonical", partition=partition, batch=items)


async def test_rows_chain_and_verify(db: asyncpg.Connection, signing_key: Ed25519Signer) -> None:
    await record_signing_key(db, signing_key.public_key)
    result = await _append(db, signing_key, [OffsetEvent(i, event(i)) for i in range(5)])
    assert (result.appended, result.next_offset) == (5, 5)
    report = await verify_tenant(db, "t1", await published_keys(db))
    assert report.ok, report.breaks
    assert report.rows == 5
    seqs = [r["chain_seq"] for r in await db.fetch("SELECT chain_seq FROM audit_logs ORDER BY id")]
    assert seqs == [1, 2, 3, 4, 5]
    stored = await db.fetchval("SELECT next_offset FROM signer_offsets WHERE partition = 0")
    assert stored == 5


async def test_replayed_offsets_and_duplicate_events_change_nothing(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    await _append(db, signing_key, [OffsetEvent(i, event(i)) for i in range(3)])
    replay = await _append(db, signing_key, [OffsetEvent(i, event(i)) for i in range(3)])
    assert replay.appended == 0 and replay.stale == 3
    # A client retry: the same events again, at new offsets.
    retry = await _append(
        db, signing_key, [OffsetEvent(3 + i, event(i)) for i in range(3)] + [OffsetEvent(6, event(9))]
    )
    assert (retry.appended, retry.duplicates) == (1, 3)
    assert await db.fetchval("SELECT count(*) FROM audit_logs") == 4
    assert (await verify_tenant(db, "t1", await published_keys(db))).ok


async def test_two_signers_on_one_partition_never_fork(database_url: str, signing_key: Ed25519Signer) -> None:
    """A zombie and its successor append the same partition concurrently: one linear chain results."""
    other_key = Ed25519Signer.generate()
    conns = [await connect(database_url) for _ in range(2)]
    try:
        await record_signing_key(conns[0], signing_key.public_key)
        await record_signing_key(conns[0], other_key.public_key)
        items = [OffsetEvent(i, event(i)) for i in range(200)]

        async def run(conn: asyncpg.Connection, key: Ed25519Signer) -> None:
            for start in range(0, 200, 10):
                await _append(conn, key, items[start : start + 10])

        await asyncio.gather(run(conns[0], signing_key), run(conns[1], other_key))
        db = conns[0]
        assert await db.fetchval("SELECT count(*) FROM audit_logs") == 200
        assert await db.fetchval("SELECT count(DISTINCT chain_seq) FROM audit_logs") == 200
        assert await db.fetchval("SELECT max(chain_seq) FROM audit_logs") == 200
        report = await verify_tenant(db, "t1", await published_keys(db))
        assert report.ok, report.breaks
    finally:
        for conn in conns:
            await conn.close()


async def test_tenants_get_independent_chains(db: asyncpg.Connection, signing_key: Ed25519Signer) -> None:
    await record_signing_key(db, signing_key.public_key)
    batch = [OffsetEvent(i, event(i, tenant="a" if i % 2 else "b")) for i in range(6)]
    await _append(db, signing_key, batch)
    rows = await db.fetch("SELECT tenant_id, max(chain_seq) AS head FROM audit_logs GROUP BY 1 ORDER BY 1")
    assert [(r["tenant_id"], r["head"]) for r in rows] == [("a", 3), ("b", 3)]


async def test_verify_detects_a_changed_field(db: asyncpg.Connection, signing_key: Ed25519Signer) -> None:
    await record_signing_key(db, signing_key.public_key)
    await _append(db, signing_key, [OffsetEvent(i, event(i)) for i in range(4)])
    await db.execute("UPDATE audit_logs SET cost = 0 WHERE chain_seq = 3")
    report = await verify_tenant(db, "t1", await published_keys(db))
    assert [(b.chain_seq, b.kind) for b in report.breaks] == [(3, "modified")]
