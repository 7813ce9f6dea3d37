"""Each tampering an operator could do with plain SQL, and the break verify reports for it."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.signer.appender import (
    CheckpointPolicy,
    OffsetEvent,
    RetiredKey,
    append_batch,
    checkpoint_idle_chains,
    require_enrolled_key,
)
from shared import verify
from shared.chain import row_hash, stored_canonical_bytes
from shared.db.pool import connect
from shared.enrollment import record_signing_key
from shared.keys import Ed25519Signer
from shared.verify import key_book_from_export, load_key_book, stored_checkpoints, verify_tenant
from tests.integration.signer.test_append import event

ROWS = 12


async def _chain(
    db: asyncpg.Connection, key: Ed25519Signer, rows: int = ROWS, policy: CheckpointPolicy | None = None
) -> None:
    await record_signing_key(db, key.public_key)
    await append_batch(
        db,
        key,
        group="g",
        topic="c",
        partition=0,
        batch=[OffsetEvent(i, event(i)) for i in range(rows)],
        checkpoints=policy,
    )


async def _swap_seq(db: asyncpg.Connection, a: int, b: int) -> None:
    await db.execute("UPDATE audit_logs SET chain_seq = -1 WHERE chain_seq = $1", a)
    await db.execute("UPDATE audit_logs SET chain_seq = $1 WHERE chain_seq = $2", a, b)
    await db.execute("UPDATE audit_logs SET chain_seq = $1 WHERE chain_seq = -1", b)


async def _forge_insert(db: asyncpg.Connection, at: int) -> None:
    """Shift rows up, then slip in a row that links correctly and has a correct hash, but no valid signature."""
    await db.execute("UPDATE audit_logs SET chain_seq = -chain_seq WHERE chain_seq >= $1", at)
    await db.execute("UPDATE audit_logs SET chain_seq = -chain_seq + 1 WHERE chain_seq < 0")
    template = dict(await db.fetchrow("SELECT * FROM audit_logs WHERE chain_seq = $1", at + 1))
    prev = bytes((await db.fetchrow("SELECT row_hash FROM audit_logs WHERE chain_seq = $1", at - 1))["row_hash"])
    template.update(event_id="forged", chain_seq=at, cost=0, prev_hash=prev)
    template["row_hash"] = row_hash(prev, stored_canonical_bytes(template), template["hash_version"])
    template["signature"] = Ed25519Signer.generate().sign(template["row_hash"])
    del template["id"]
    columns = list(template)
    await db.execute(
        f"INSERT INTO audit_logs ({', '.join(columns)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})",
        *template.values(),
    )


async def _resign_unknown(db: asyncpg.Connection, at: int) -> None:
    row = dict(await db.fetchrow("SELECT * FROM audit_logs WHERE chain_seq = $1", at))
    intruder = Ed25519Signer.generate()
    row.update(signing_key_id=intruder.key_id, user_email="someone@else.example")
    digest = row_hash(bytes(row["prev_hash"]), stored_canonical_bytes(row), row["hash_version"])
    await db.execute(
        "UPDATE audit_logs SET signing_key_id = $2, user_email = $3, row_hash = $4, signature = $5 WHERE chain_seq = $1",
        at,
        intruder.key_id,
        row["user_email"],
        digest,
        intruder.sign(digest),
    )


Tamper = Callable[[asyncpg.Connection], Awaitable[object]]
CASES: list[tuple[str, Tamper, int, str]] = [
    (
        "changed field",
        lambda db: db.execute("UPDATE audit_logs SET tokens_used = 1 WHERE chain_seq = 5"),
        5,
        "modified",
    ),
    (
        "changed content",
        lambda db: db.execute('UPDATE audit_logs SET content = \'{"prompt": "hi bob@x.example"}\' WHERE chain_seq = 7'),
        7,
        "modified",
    ),
    ("deleted middle row", lambda db: db.execute("DELETE FROM audit_logs WHERE chain_seq = 6"), 6, "deleted"),
    ("forged inserted row", lambda db: _forge_insert(db, 4), 4, "inserted"),
    ("two swapped rows", lambda db: _swap_seq(db, 8, 9), 8, "reordered"),
    ("two rows swapped far apart", lambda db: _swap_seq(db, 3, 7), 3, "reordered"),
    ("key windows deleted", lambda db: db.execute("DELETE FROM key_activations"), 1, "bad_signature"),
    (
        "replaced signature",
        lambda db: db.execute("UPDATE audit_logs SET signature = decode(repeat('ab', 64), 'hex') WHERE chain_seq = 3"),
        3,
        "bad_signature",
    ),
    ("re-signed with an unknown key", lambda db: _resign_unknown(db, 10), 10, "bad_signature"),
    ("deleted tail, head kept", lambda db: db.execute("DELETE FROM audit_logs WHERE chain_seq > 10"), 11, "truncated"),
]


@pytest.mark.parametrize(("case", "tamper", "seq", "kind"), CASES, ids=[c[0] for c in CASES])
async def test_verify_names_the_break(
    db: asyncpg.Connection, signing_key: Ed25519Signer, case: str, tamper: Tamper, seq: int, kind: str
) -> None:
    await _chain(db, signing_key)
    assert (await verify_tenant(db, "t1", await load_key_book(db))).ok
    await tamper(db)
    report = await verify_tenant(db, "t1", await load_key_book(db))
    assert [(b.chain_seq, b.kind) for b in report.breaks] == [(seq, kind)], report.breaks


@pytest.mark.parametrize(("case", "tamper", "seq", "kind"), CASES, ids=[c[0] for c in CASES])
async def test_parallel_ranges_name_the_same_break(
    db: asyncpg.Connection,
    database_url: str,
    signing_key: Ed25519Signer,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    tamper: Tamper,
    seq: int,
    kind: str,
) -> None:
    """Ranges of 4 rows checked by worker processes: breaks on and between range edges are named alike."""
    monkeypatch.setattr(verify, "RANGE_ROWS", 4)
    await _chain(db, signing_key)
    await tamper(db)
    (report,) = await verify.verify_tenants(db, ["t1"], await load_key_book(db), dsn=database_url, workers=2)
    assert [(b.chain_seq, b.kind) for b in report.breaks] == [(seq, kind)], report.breaks


async def test_tail_truncation_hidden_from_the_head_is_caught_by_a_saved_checkpoint(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await _chain(db, signing_key, policy=CheckpointPolicy(every_rows=4, every=timedelta(hours=1)))
    saved = await stored_checkpoints(db, "t1")
    assert [c.chain_seq for c in saved] == [ROWS]
    # A careful operator also rewinds the chain head, so the database alone looks consistent.
    await db.execute("DELETE FROM audit_logs WHERE chain_seq > 9")
    head = await db.fetchval("SELECT row_hash FROM audit_logs WHERE chain_seq = 9")
    await db.execute("UPDATE chain_heads SET head_seq = 9, head_hash = $1", head)
    await db.execute("DELETE FROM chain_checkpoints")
    assert (await verify_tenant(db, "t1", await load_key_book(db))).ok
    report = await verify_tenant(db, "t1", await load_key_book(db), checkpoints=saved)
    assert [(b.chain_seq, b.kind) for b in report.breaks] == [(10, "truncated")]


async def test_checkpoints_every_n_rows_and_every_t_seconds(db: asyncpg.Connection, signing_key: Ed25519Signer) -> None:
    await record_signing_key(db, signing_key.public_key)
    policy = CheckpointPolicy(every_rows=5, every=timedelta(seconds=60))
    t0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    for start in range(0, 12, 3):  # batches of 3 rows
        await append_batch(
            db,
            signing_key,
            group="g",
            topic="c",
            partition=0,
            now=t0,
            batch=[OffsetEvent(i, event(i)) for i in range(start, start + 3)],
            checkpoints=policy,
        )
    await append_batch(
        db,
        signing_key,
        group="g",
        topic="c",
        partition=0,
        now=t0 + timedelta(seconds=61),
        batch=[OffsetEvent(12, event(12))],
        checkpoints=policy,
    )
    seqs = [c.chain_seq for c in await stored_checkpoints(db, "t1")]
    assert seqs == [3, 9, 13]  # the first append, then 5+ rows later, then 61 s later


async def test_rotation_keeps_old_rows_verifiable_and_rejects_a_key_outside_its_window(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await _chain(db, signing_key, rows=5)
    successor = Ed25519Signer.generate()
    await record_signing_key(db, successor.public_key)
    await append_batch(
        db, successor, group="g", topic="c", partition=0, batch=[OffsetEvent(i, event(i)) for i in range(5, 10)]
    )
    book = await load_key_book(db)
    assert book.activations["t1"] == [(1, signing_key.key_id), (6, successor.key_id)]
    assert (await verify_tenant(db, "t1", book)).ok
    # The old key, still known, re-signs a row from after the rotation: outside its window.
    row = dict(await db.fetchrow("SELECT * FROM audit_logs WHERE chain_seq = 8"))
    row["signing_key_id"] = signing_key.key_id
    digest = row_hash(bytes(row["prev_hash"]), stored_canonical_bytes(row), row["hash_version"])
    await db.execute(
        "UPDATE audit_logs SET signing_key_id = $1, row_hash = $2, signature = $3 WHERE chain_seq = 8",
        signing_key.key_id,
        digest,
        signing_key.sign(digest),
    )
    report = await verify_tenant(db, "t1", await load_key_book(db))
    assert [(b.chain_seq, b.kind) for b in report.breaks] == [(8, "bad_signature")]


async def test_a_retired_key_cannot_sign_again(db: asyncpg.Connection, signing_key: Ed25519Signer) -> None:
    await _chain(db, signing_key, rows=3)
    await db.execute("UPDATE signing_keys SET valid_until = now()")
    with pytest.raises(RetiredKey):
        await require_enrolled_key(db, signing_key)
    # Rows it signed before retirement still verify.
    assert (await verify_tenant(db, "t1", await load_key_book(db))).ok


async def test_a_key_activated_after_its_retirement_is_refused(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await _chain(db, signing_key, rows=3)
    await db.execute("UPDATE signing_keys SET valid_until = now() - interval '1 hour'")
    report = await verify_tenant(db, "t1", await load_key_book(db))
    assert [(b.chain_seq, b.kind) for b in report.breaks] == [(1, "bad_signature")]


async def test_an_auditors_saved_key_export_is_used_instead_of_the_database(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await _chain(db, signing_key, rows=4)
    book = await load_key_book(db)
    export = [
        json.dumps(
            {
                "key_id": k,
                "public_key": base64.b64encode(v).decode(),
                "activations": [
                    {"tenant_id": t, "from_seq": s}
                    for t, acts in book.activations.items()
                    for s, kid in acts
                    if kid == k
                ],
            }
        )
        for k, v in book.keys.items()
    ]
    saved = key_book_from_export(export)
    # The operator swaps in a key of their own and re-signs everything with it.
    intruder = Ed25519Signer.generate()
    await record_signing_key(db, intruder.public_key)
    await db.execute("UPDATE key_activations SET key_id = $1", intruder.key_id)
    for seq in range(1, 5):
        row = dict(await db.fetchrow("SELECT * FROM audit_logs WHERE chain_seq = $1", seq))
        resigned = {**row, "signing_key_id": intruder.key_id}
        digest = row_hash(bytes(row["prev_hash"]), stored_canonical_bytes(resigned), row["hash_version"])
        await db.execute(
            "UPDATE audit_logs SET signing_key_id = $2, row_hash = $3, signature = $4 WHERE chain_seq = $1",
            seq,
            intruder.key_id,
            digest,
            intruder.sign(digest),
        )
    report = await verify_tenant(db, "t1", saved)
    assert [(b.chain_seq, b.kind) for b in report.breaks] == [(1, "bad_signature")]


async def test_quiet_chains_get_their_tail_checkpointed(db: asyncpg.Connection, signing_key: Ed25519Signer) -> None:
    policy = CheckpointPolicy(every_rows=1_000, every=timedelta(seconds=60))
    t0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    await record_signing_key(db, signing_key.public_key)
    await append_batch(
        db, signing_key, group="g", topic="c", partition=0, now=t0, checkpoints=policy, batch=[OffsetEvent(0, event(0))]
    )
    await append_batch(
        db,
        signing_key,
        group="g",
        topic="c",
        partition=0,
        now=t0 + timedelta(seconds=1),
        checkpoints=policy,
        batch=[OffsetEvent(i, event(i)) for i in range(1, 6)],
    )
    assert [c.chain_seq for c in await stored_checkpoints(db, "t1")] == [1]
    assert await checkpoint_idle_chains(db, signing_key, policy, now=t0 + timedelta(seconds=30)) == 0
    assert await checkpoint_idle_chains(db, signing_key, policy, now=t0 + timedelta(seconds=61)) == 1
    assert [c.chain_seq for c in await stored_checkpoints(db, "t1")] == [1, 6]
    assert await checkpoint_idle_chains(db, signing_key, policy, now=t0 + timedelta(seconds=200)) == 0


async def test_verify_during_appends_sees_a_consistent_chain(database_url: str, signing_key: Ed25519Signer) -> None:
    writer, reader = await connect(database_url), await connect(database_url)
    try:
        await record_signing_key(writer, signing_key.public_key)

        async def append() -> None:
            for start in range(0, 600, 30):
                await append_batch(
                    writer,
                    signing_key,
                    group="g",
                    topic="c",
                    partition=0,
                    batch=[OffsetEvent(i, event(i)) for i in range(start, start + 30)],
                )

        appending = asyncio.create_task(append())
        while not appending.done():
            report = await verify_tenant(reader, "t1", await load_key_book(reader))
            assert report.ok, report.breaks
        await appending
    finally:
        await writer.close()
        await reader.close()


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ("event_time = '20000-01-01T00:00:00Z'", "modified"),  # a year no client library can represent
        ("received_at = '0044-03-15 BC'", "modified"),
        ("event_time = 'infinity'", "modified"),
        ("cost = 'NaN'", "modified"),
        ("attributes = '{\"x\": 1e400}'", "modified"),  # exact in jsonb, infinite as a double
        # JSON deeper than any decoder follows (jsonb holds it): a break at that row, not a crash.
        ("attributes = (repeat('[', 5000) || repeat(']', 5000))::jsonb", "modified"),
        ("hash_version = 3", "modified"),
        ("signature = ''::bytea", "bad_signature"),
    ],
)
async def test_values_no_signed_row_holds_are_breaks_not_crashes(
    db: asyncpg.Connection, database_url: str, signing_key: Ed25519Signer, monkeypatch: pytest.MonkeyPatch,
    change: str, kind: str,
) -> None:
    monkeypatch.setattr(verify, "RANGE_ROWS", 4)
    await _chain(db, signing_key)
    await db.execute(f"UPDATE audit_logs SET {change} WHERE chain_seq = 6")
    serial = await verify_tenant(db, "t1", await load_key_book(db))
    (parallel,) = await verify.verify_tenants(db, ["t1"], await load_key_book(db), dsn=database_url, workers=2)
    for report in (serial, parallel):
        assert [(b.chain_seq, b.kind) for b in report.breaks] == [(6, kind)], report.breaks
