"""Appends canonical events to their tenant's chain in PostgreSQL, with the Kafka offsets, in one transaction.

Two safeguards make a fork impossible even with two live signers on one partition (a zombie after a
rebalance): the offsets row of the partition is locked and compared with the batch, so a batch already
applied by someone else is skipped; and each chain head is locked ``FOR UPDATE`` while rows are appended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.canonical import EVENT_COLUMNS, CanonicalEvent
from shared.chain import GENESIS_HASH, HASH_VERSION, canonical_bytes, row_hash
from shared.keys import Signer

CHAIN_COLUMNS = ("chain_seq", "prev_hash", "row_hash", "signature", "signing_key_id", "hash_version")
INSERT_COLUMNS = (*EVENT_COLUMNS, *CHAIN_COLUMNS)


@dataclass(frozen=True)
class OffsetEvent:
    """``event`` is None for a message that was dead-lettered: its offset is consumed all the same."""

    offset: int
    event: CanonicalEvent | None


@dataclass(frozen=True)
class AppendResult:
    appended: int
    duplicates: int
    stale: int
    next_offset: int


class OffsetGap(Exception):
    """The batch starts after the stored offset: messages in between would be skipped. Seek back instead."""

    def __init__(self, stored: int) -> None:
        super().__init__(f"stored offset {stored} is behind the batch")
        self.stored = stored


async def register_key(conn: asyncpg.Connection, signer: Signer) -> None:
    await conn.execute(
        "INSERT INTO signing_keys (key_id, public_key) VALUES ($1, $2) ON CONFLICT (key_id) DO NOTHING",
        signer.key_id, signer.public_key,
    )


async def stored_offsets(conn: asyncpg.Connection, group: str, topic: str) -> dict[int, int]:
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM signer_offsets WHERE consumer_group = $1 AND topic = $2",
        group, topic,
    )
    return {row["partition"]: row["next_offset"] for row in rows}


def _event_values(event: CanonicalEvent) -> dict[str, Any]:
    return {column: getattr(event, column) for column in EVENT_COLUMNS}


async def append_batch(conn: asyncpg.Connection, signer: Signer, *, group: str, topic: str, partition: int,
                       batch: Sequence[OffsetEvent]) -> AppendResult:
    """``batch`` holds consecutive messages of one partition, in offset order."""
    assert batch, "empty batch"
    async with conn.transaction():
        stored = await conn.fetchval(
            "SELECT next_offset FROM signer_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = $3"
            " FOR UPDATE",
            group, topic, partition,
        )
        if stored is None:
            await conn.execute(
                "INSERT INTO signer_offsets (consumer_group, topic, partition, next_offset) VALUES ($1,$2,$3,$4)"
                " ON CONFLICT DO NOTHING",
                group, topic, partition, batch[0].offset,
            )
            stored = await conn.fetchval(
                "SELECT next_offset FROM signer_offsets WHERE consumer_group = $1 AND topic = $2"
                " AND partition = $3 FOR UPDATE",
                group, topic, partition,
            )
        if stored > batch[0].offset and stored > batch[-1].offset:
            return AppendResult(0, 0, len(batch), stored)
        if stored < batch[0].offset:
            raise OffsetGap(stored)
        fresh = [item for item in batch if item.offset >= stored]
        stale = len(batch) - len(fresh)

        fresh_events = [item.event for item in fresh if item.event is not None]
        ids = [event.event_id for event in fresh_events]
        existing = {
            row["event_id"]
            for row in await conn.fetch("SELECT event_id FROM audit_logs WHERE event_id = ANY($1::text[])", ids)
        }
        to_append: list[CanonicalEvent] = []
        seen: set[str] = set(existing)
        for event in fresh_events:
            if event.event_id not in seen:
                seen.add(event.event_id)
                to_append.append(event)

        records = await _chain_rows(conn, signer, to_append) if to_append else []
        if records:
            await conn.copy_records_to_table("audit_logs", records=records, columns=list(INSERT_COLUMNS))
        next_offset = batch[-1].offset + 1
        await conn.execute(
            "UPDATE signer_offsets SET next_offset = $4, updated_at = now()"
            " WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
            group, topic, partition, next_offset,
        )
    return AppendResult(len(records), len(fresh_events) - len(to_append), stale, next_offset)


async def _chain_rows(conn: asyncpg.Connection, signer: Signer,
                      events: Sequence[CanonicalEvent]) -> list[tuple[Any, ...]]:
    tenants = sorted({e.tenant_id for e in events})
    # Lock order is by tenant id, so two signers holding different tenants cannot deadlock.
    await conn.execute(
        "INSERT INTO chain_heads (tenant_id, head_seq, head_hash) SELECT t, 0, $2 FROM unnest($1::text[]) t"
        " ON CONFLICT (tenant_id) DO NOTHING",
        tenants, GENESIS_HASH,
    )
    heads = {
        row["tenant_id"]: (row["head_seq"], bytes(row["head_hash"]))
        for row in await conn.fetch(
            "SELECT tenant_id, head_seq, head_hash FROM chain_heads WHERE tenant_id = ANY($1::text[])"
            " ORDER BY tenant_id FOR UPDATE",
            tenants,
        )
    }
    records: list[tuple[Any, ...]] = []
    for event in events:
        seq, prev = heads[event.tenant_id]
        seq += 1
        values = _event_values(event)
        values.update(chain_seq=seq, signing_key_id=signer.key_id, hash_version=HASH_VERSION)
        digest = row_hash(prev, canonical_bytes(values))
        values.update(prev_hash=prev, row_hash=digest, signature=signer.sign(digest))
        records.append(tuple(values[column] for column in INSERT_COLUMNS))
        heads[event.tenant_id] = (seq, digest)
    await conn.executemany(
        "UPDATE chain_heads SET head_seq = $2, head_hash = $3, updated_at = now() WHERE tenant_id = $1",
        [(tenant, seq, digest) for tenant, (seq, digest) in heads.items()],
    )
    return records
