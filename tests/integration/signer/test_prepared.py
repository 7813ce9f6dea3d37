"""Batches hashed and signed ahead of their transaction: written as prepared when the chain is where they
expect it, chained again under lock when it is not, and never forking or duplicating a chain."""

from __future__ import annotations

import asyncpg

from services.signer.appender import (
    AppendResult,
    Head,
    OffsetEvent,
    PreparedBatch,
    append_batch,
    append_prepared,
    prepare,
    register_key,
)
from services.signer.rows import ChainRow, decode_row
from services.signer.signing import HelperProcessSigner
from shared.keys import Ed25519Signer
from shared.verify import load_key_book, verify_tenant
from tests.integration.signer.test_append import event


def rows(first_offset: int, events: range, tenant: str = "t1") -> list[OffsetEvent]:
    return [
        OffsetEvent(first_offset + i, decode_row(event(n, tenant).to_json())) for i, n in enumerate(events)
    ]


async def _prepare(
    db: asyncpg.Connection, key: Ed25519Signer, batch: list[OffsetEvent], heads: dict[str, Head], **kw: object
) -> PreparedBatch:
    return await prepare(db, key, batch, heads, **kw)  # type: ignore[arg-type]


async def _write(db: asyncpg.Connection, key: Ed25519Signer, prepared: PreparedBatch, partition: int = 0) -> AppendResult:
    return await append_prepared(db, key, prepared, group="g", topic="c", partition=partition)


async def _chain(db: asyncpg.Connection, tenant: str = "t1") -> list[tuple[int, str]]:
    found = await db.fetch(
        "SELECT chain_seq, event_id FROM audit_logs WHERE tenant_id = $1 ORDER BY chain_seq", tenant
    )
    return [(r["chain_seq"], r["event_id"]) for r in found]


async def _verified(db: asyncpg.Connection, tenant: str = "t1") -> bool:
    return (await verify_tenant(db, tenant, await load_key_book(db))).ok


async def test_consecutive_prepared_batches_are_written_as_prepared(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await register_key(db, signing_key)
    heads: dict[str, Head] = {}
    first = await _prepare(db, signing_key, rows(0, range(3)), heads)
    # The second is prepared while the first is still unwritten: from the heads the first leaves.
    second = await _prepare(db, signing_key, rows(3, range(3, 6)), heads, in_flight=first.event_ids)
    assert (await _write(db, signing_key, first)).as_prepared
    result = await _write(db, signing_key, second)
    assert result.as_prepared and result.appended == 3 and result.heads == {"t1": 6}
    assert [seq for seq, _ in await _chain(db)] == [1, 2, 3, 4, 5, 6]
    assert await _verified(db)


async def test_an_event_in_flight_is_not_chained_twice(db: asyncpg.Connection, signing_key: Ed25519Signer) -> None:
    await register_key(db, signing_key)
    heads: dict[str, Head] = {}
    first = await _prepare(db, signing_key, rows(0, range(3)), heads)
    second = await _prepare(db, signing_key, rows(3, range(2, 5)), heads, in_flight=first.event_ids)
    assert second.duplicates == 1
    await _write(db, signing_key, first)
    result = await _write(db, signing_key, second)
    assert (result.as_prepared, result.appended, result.duplicates) == (True, 2, 1)
    assert [e for _, e in await _chain(db)] == [f"t1-ev-{n}" for n in range(5)]
    assert await _verified(db)


async def _second_batch_prepared_after_a_first_written(db: asyncpg.Connection, key: Ed25519Signer) -> PreparedBatch:
    await register_key(db, key)
    heads: dict[str, Head] = {}
    await _write(db, key, await _prepare(db, key, rows(0, range(3)), heads))
    return await _prepare(db, key, rows(3, range(3, 6)), heads)


async def test_a_batch_another_signer_already_wrote_is_skipped(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    ours = await _second_batch_prepared_after_a_first_written(db, signing_key)
    # A zombie signer of the same partition writes the same messages first.
    await append_batch(db, signing_key, group="g", topic="c", partition=0, batch=rows(3, range(3, 6)))
    result = await _write(db, signing_key, ours)
    assert (result.as_prepared, result.appended, result.stale) == (False, 0, 3)
    assert [seq for seq, _ in await _chain(db)] == [1, 2, 3, 4, 5, 6]


async def test_a_head_moved_by_someone_else_is_chained_after_under_lock(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    ours = await _second_batch_prepared_after_a_first_written(db, signing_key)
    # The same tenant's head moves through another partition (which the topic's keying never does):
    # one new event, and one of ours, which must then not be chained twice.
    await append_batch(db, signing_key, group="g", topic="c", partition=1, batch=rows(0, range(100, 101)))
    await append_batch(db, signing_key, group="g", topic="c", partition=1, batch=rows(1, range(4, 5)))
    result = await _write(db, signing_key, ours)
    assert (result.as_prepared, result.appended, result.duplicates) == (False, 2, 1)
    chain = await _chain(db)
    assert [seq for seq, _ in chain] == list(range(1, 8))
    assert sorted(e for _, e in chain) == sorted([f"t1-ev-{n}" for n in (0, 1, 2, 3, 4, 5, 100)])
    assert await _verified(db)


async def test_prepared_batches_signed_on_the_helper_verify(db: asyncpg.Connection, signing_key: Ed25519Signer) -> None:
    await register_key(db, signing_key)
    helper = await HelperProcessSigner.start(signing_key)
    try:
        heads: dict[str, Head] = {}
        offset = 0
        for start in range(0, 300, 100):
            batch = rows(0, range(start, start + 100)) + rows(0, range(3), "t2")
            # Offsets of one partition are consecutive: t2's events follow t1's in the same batch.
            batch = [OffsetEvent(offset + i, item.event) for i, item in enumerate(batch)]
            offset += len(batch)
            prepared = await _prepare(db, signing_key, batch, heads, batch_signer=helper)
            assert (await _write(db, signing_key, prepared)).as_prepared
    finally:
        await helper.close()
    assert await _verified(db, "t1") and await _verified(db, "t2")
    assert len(await _chain(db, "t2")) == 3  # the same three events each time: chained once


def test_rows_keep_their_values_when_chained_again() -> None:
    row = decode_row(event(1).to_json())
    assert isinstance(row, ChainRow) and "prev_hash" not in row.values
