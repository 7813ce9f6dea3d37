"""Appends canonical events to their tenant's chain in PostgreSQL, with the Kafka offsets, in one transaction.

Two safeguards make a fork impossible even with two live signers on one partition (a zombie after a
rebalance): the partition's offsets row is locked and compared with the batch, so a batch another signer
already applied is skipped; and each chain head is locked ``FOR UPDATE`` while rows are appended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from shared.canonical import EVENT_COLUMNS, CanonicalEvent
from shared.chain import GENESIS_HASH, HASH_VERSION, as_stored, canonical_bytes, checkpoint_message, row_hash
from shared.keys import Signer

CHAIN_COLUMNS = ("chain_seq", "prev_hash", "row_hash", "signature", "signing_key_id", "hash_version")
INSERT_COLUMNS = (*EVENT_COLUMNS, *CHAIN_COLUMNS)
JSON_COLUMNS = frozenset({"content", "content_lengths", "redacted_fields", "attributes"})


@dataclass(frozen=True)
class OffsetEvent:
    """``event`` is None for a message that was dead-lettered: its offset is consumed all the same."""

    offset: int
    event: CanonicalEvent | None


@dataclass(frozen=True)
class CheckpointPolicy:
    """A signed checkpoint is written when a chain grew by ``every_rows`` or ``every`` has passed."""

    every_rows: int = 1_000
    every: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class AppendResult:
    appended: int
    duplicates: int
    stale: int
    next_offset: int
    heads: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0


class OffsetGap(Exception):
    """The batch starts after the stored offset: messages in between would be skipped. Seek back instead."""

    def __init__(self, stored: int) -> None:
        super().__init__(f"stored offset {stored} is behind the batch")
        self.stored = stored


class RetiredKey(Exception):
    """The configured signing key was retired after a rotation; signing with it would break verification."""


async def register_key(conn: asyncpg.Connection, signer: Signer) -> None:
    retired = await conn.fetchval("SELECT valid_until FROM signing_keys WHERE key_id = $1", signer.key_id)
    if retired is not None:
        raise RetiredKey(f"signing key {signer.key_id} was retired at {retired.isoformat()}")
    await conn.execute(
        "INSERT INTO signing_keys (key_id, public_key) VALUES ($1, $2) ON CONFLICT (key_id) DO NOTHING",
        signer.key_id,
        signer.public_key,
    )


async def stored_offsets(conn: asyncpg.Connection, group: str, topic: str) -> dict[int, int]:
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM signer_offsets WHERE consumer_group = $1 AND topic = $2",
        group,
        topic,
    )
    return {row["partition"]: row["next_offset"] for row in rows}


async def _lock_offset(conn: asyncpg.Connection, group: str, topic: str, partition: int, first: int) -> int:
    query = (
        "SELECT next_offset FROM signer_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = $3 FOR UPDATE"
    )
    stored = await conn.fetchval(query, group, topic, partition)
    if stored is None:
        await conn.execute(
            "INSERT INTO signer_offsets (consumer_group, topic, partition, next_offset) VALUES ($1,$2,$3,$4)"
            " ON CONFLICT DO NOTHING",
            group,
            topic,
            partition,
            first,
        )
        stored = await conn.fetchval(query, group, topic, partition)
    result: int = stored
    return result


async def append_batch(
    conn: asyncpg.Connection,
    signer: Signer,
    *,
    group: str,
    topic: str,
    partition: int,
    batch: Sequence[OffsetEvent],
    checkpoints: CheckpointPolicy | None = None,
    now: datetime | None = None,
) -> AppendResult:
    """``batch`` holds consecutive messages of one partition, in offset order."""
    assert batch, "empty batch"
    async with conn.transaction():
        stored = await _lock_offset(conn, group, topic, partition, batch[0].offset)
        if stored > batch[-1].offset:
            return AppendResult(0, 0, len(batch), stored)
        if stored < batch[0].offset:
            raise OffsetGap(stored)
        fresh_events = [item.event for item in batch if item.offset >= stored and item.event is not None]
        stale = sum(1 for item in batch if item.offset < stored)

        existing = {
            row["event_id"]
            for row in await conn.fetch(
                "SELECT event_id FROM audit_logs WHERE event_id = ANY($1::text[])",
                [event.event_id for event in fresh_events],
            )
        }
        to_append: list[CanonicalEvent] = []
        for event in fresh_events:
            if event.event_id not in existing:
                existing.add(event.event_id)
                to_append.append(event)

        heads: dict[str, int] = {}
        written = 0
        if to_append:
            records, heads, written = await _chain(conn, signer, to_append, checkpoints, now or datetime.now(UTC))
            await conn.copy_records_to_table("audit_logs", records=records, columns=list(INSERT_COLUMNS))
        next_offset = batch[-1].offset + 1
        await conn.execute(
            "UPDATE signer_offsets SET next_offset = $4, updated_at = now()"
            " WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
            group,
            topic,
            partition,
            next_offset,
        )
    return AppendResult(len(to_append), len(fresh_events) - len(to_append), stale, next_offset, heads, written)


@dataclass
class _Head:
    seq: int
    hash: bytes
    key_id: str | None
    checkpoint_seq: int
    checkpoint_at: datetime | None


async def _chain(
    conn: asyncpg.Connection,
    signer: Signer,
    events: Sequence[CanonicalEvent],
    policy: CheckpointPolicy | None,
    now: datetime,
) -> tuple[list[tuple[Any, ...]], dict[str, int], int]:
    tenants = sorted({e.tenant_id for e in events})
    # Lock order is by tenant id, so two signers holding different tenants cannot deadlock.
    await conn.execute(
        "INSERT INTO chain_heads (tenant_id, head_seq, head_hash) SELECT t, 0, $2 FROM unnest($1::text[]) t"
        " ON CONFLICT (tenant_id) DO NOTHING",
        tenants,
        GENESIS_HASH,
    )
    heads = {
        row["tenant_id"]: _Head(
            row["head_seq"], bytes(row["head_hash"]), row["key_id"], row["checkpoint_seq"], row["checkpoint_at"]
        )
        for row in await conn.fetch(
            "SELECT tenant_id, head_seq, head_hash, key_id, checkpoint_seq, checkpoint_at FROM chain_heads"
            " WHERE tenant_id = ANY($1::text[]) ORDER BY tenant_id FOR UPDATE",
            tenants,
        )
    }
    activations = [
        (tenant, head.seq + 1, signer.key_id) for tenant, head in heads.items() if head.key_id != signer.key_id
    ]
    if activations:
        # This key signs these chains from their next row on; older rows keep the key they were signed with.
        await conn.executemany(
            "INSERT INTO key_activations (tenant_id, from_seq, key_id) VALUES ($1, $2, $3)", activations
        )
    records: list[tuple[Any, ...]] = []
    for event in events:
        head = heads[event.tenant_id]
        values = as_stored({column: getattr(event, column) for column in EVENT_COLUMNS}, JSON_COLUMNS)
        values.update(chain_seq=head.seq + 1, signing_key_id=signer.key_id, hash_version=HASH_VERSION)
        digest = row_hash(head.hash, canonical_bytes(values))
        values.update(prev_hash=head.hash, row_hash=digest, signature=signer.sign(digest))
        records.append(tuple(values[column] for column in INSERT_COLUMNS))
        head.seq, head.hash = head.seq + 1, digest
    checkpoints = []
    if policy is not None:
        for tenant, head in heads.items():
            grown = head.seq - head.checkpoint_seq
            due = head.checkpoint_at is None or now - head.checkpoint_at >= policy.every
            if grown >= policy.every_rows or (grown > 0 and due):
                message = checkpoint_message(tenant, head.seq, head.hash, now, signer.key_id)
                checkpoints.append((tenant, head.seq, head.hash, now, signer.key_id, signer.sign(message)))
                head.checkpoint_seq, head.checkpoint_at = head.seq, now
    if checkpoints:
        await conn.executemany(
            "INSERT INTO chain_checkpoints (tenant_id, chain_seq, head_hash, created_at, key_id, signature)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            checkpoints,
        )
    await conn.executemany(
        "UPDATE chain_heads SET head_seq = $2, head_hash = $3, key_id = $4, checkpoint_seq = $5,"
        " checkpoint_at = $6, updated_at = now() WHERE tenant_id = $1",
        [(t, h.seq, h.hash, signer.key_id, h.checkpoint_seq, h.checkpoint_at) for t, h in heads.items()],
    )
    return records, {t: h.seq for t, h in heads.items()}, len(checkpoints)


async def checkpoint_idle_chains(
    conn: asyncpg.Connection, signer: Signer, policy: CheckpointPolicy, now: datetime | None = None
) -> int:
    """Checkpoint chains that grew since their last checkpoint and then went quiet, so their tail is covered.

    Rows are appended and checkpointed under the same chain-head lock, so a checkpoint always names a head
    that is committed together with its rows.
    """
    now = now or datetime.now(UTC)
    written = 0
    async with conn.transaction():
        due = await conn.fetch(
            "SELECT tenant_id, head_seq, head_hash FROM chain_heads"
            " WHERE head_seq > checkpoint_seq AND (checkpoint_at IS NULL OR checkpoint_at <= $1)"
            " ORDER BY tenant_id FOR UPDATE SKIP LOCKED",
            now - policy.every,
        )
        for row in due:
            head_hash = bytes(row["head_hash"])
            message = checkpoint_message(row["tenant_id"], row["head_seq"], head_hash, now, signer.key_id)
            await conn.execute(
                "INSERT INTO chain_checkpoints (tenant_id, chain_seq, head_hash, created_at, key_id, signature)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                row["tenant_id"],
                row["head_seq"],
                head_hash,
                now,
                signer.key_id,
                signer.sign(message),
            )
            await conn.execute(
                "UPDATE chain_heads SET checkpoint_seq = $2, checkpoint_at = $3 WHERE tenant_id = $1",
                row["tenant_id"],
                row["head_seq"],
                now,
            )
            written += 1
    return written
