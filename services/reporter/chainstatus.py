"""The reporter's background chain check: incremental, resumable, and bounded per pass.

It applies ``auditctl verify``'s own rules (shared/verify.py: links, hashes, signatures, the key active at
each sequence, signed checkpoints, erasures recorded by a signed erasure event) range by range from where it
stopped, so the status endpoint answers
from a table instead of re-hashing a whole chain per request. Two cursors per tenant: the frontier follows
new rows; the rescan cursor walks the chain from the start again and again, so a row altered after the
frontier passed it is still found on the next full pass. Whatever the tampering (rows, ranges or the first
row missing, the head rewound), the outcome is a status ``broken`` with the kind and sequence number of the
break, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.chain import GENESIS_HASH
from shared.verify import (
    Break,
    Checkpoint,
    KeyBook,
    check_checkpoint,
    load_key_book,
    unrecorded_erasure,
    verify_range,
)


@dataclass(frozen=True)
class Progress:
    """Rows ``1..seq`` checked out; ``hash`` is row ``seq``'s hash, as it was when checked."""

    seq: int
    hash: bytes
    rows: int
    finding: Break | None


async def _row_hash(conn: asyncpg.Connection, tenant: str, seq: int) -> bytes | None:
    value = await conn.fetchval("SELECT row_hash FROM audit_logs WHERE tenant_id = $1 AND chain_seq = $2", tenant, seq)
    return None if value is None else bytes(value)


async def _checkpoints_between(conn: asyncpg.Connection, tenant: str, after: int, until: int) -> list[Checkpoint]:
    rows = await conn.fetch(
        "SELECT tenant_id, chain_seq, head_hash, created_at, key_id, signature FROM chain_checkpoints"
        " WHERE tenant_id = $1 AND chain_seq > $2 AND chain_seq <= $3 ORDER BY chain_seq",
        tenant, after, until,
    )
    return [Checkpoint(r["tenant_id"], r["chain_seq"], bytes(r["head_hash"]), r["created_at"], r["key_id"],
                       bytes(r["signature"])) for r in rows]


async def check_from(conn: asyncpg.Connection, tenant: str, seq: int, expected_hash: bytes, until: int,
                     book: KeyBook) -> Progress:
    """Check rows ``seq+1..until`` given that row ``seq`` was checked with hash ``expected_hash``."""
    if until <= seq:
        return Progress(seq, expected_hash, 0, None)
    if seq > 0:
        stored = await _row_hash(conn, tenant, seq)
        if stored is None:
            return Progress(seq, expected_hash, 0, Break(tenant, seq, "deleted", f"sequence {seq} is missing"))
        if stored != expected_hash:
            # verify_range trusts the stored hash of the row before the range; ours is the one we checked.
            return Progress(seq, expected_hash, 0, Break(tenant, seq, "modified", "a checked row has changed since"))
    result = await verify_range(conn, tenant, seq + 1, until, book)
    if result.brk is not None:
        last_good = result.brk.chain_seq - 1
        good_hash = expected_hash if last_good <= seq else (await _row_hash(conn, tenant, last_good) or expected_hash)
        return Progress(max(seq, last_good), good_hash, result.rows, result.brk)
    last_hash = await _row_hash(conn, tenant, until)
    if last_hash is None:  # deleted while this pass ran
        gone = Break(tenant, until, "deleted", f"sequence {until} is missing")
        return Progress(seq, expected_hash, result.rows, gone)
    for checkpoint in await _checkpoints_between(conn, tenant, seq, until):
        problem = check_checkpoint(checkpoint, await _row_hash(conn, tenant, checkpoint.chain_seq), until, book)
        if problem is not None:
            return Progress(seq, expected_hash, result.rows, problem)
    return Progress(until, last_hash, result.rows, None)


@dataclass(frozen=True)
class PassResult:
    tenant: str
    checked: int
    status: str


async def advance(conn: asyncpg.Connection, tenant: str, book: KeyBook, max_rows: int, now: datetime,
                  rescan_rows: int) -> PassResult | None:
    """One bounded pass for one tenant: up to ``max_rows`` new rows, then up to ``rescan_rows`` rows of the
    rolling rescan. None when another reporter holds this tenant right now."""
    async with conn.transaction(isolation="repeatable_read"):
        await conn.execute(
            "INSERT INTO report_chain_status (tenant_id, verified_hash, rescan_hash) VALUES ($1, $2, $2)"
            " ON CONFLICT (tenant_id) DO NOTHING",
            tenant, GENESIS_HASH,
        )
        state = await conn.fetchrow(
            "SELECT * FROM report_chain_status WHERE tenant_id = $1 FOR UPDATE SKIP LOCKED", tenant
        )
        if state is None:
            return None
        if state["status"] == "broken":
            return PassResult(tenant, 0, "broken")
        head = await conn.fetchrow("SELECT head_seq, head_hash FROM chain_heads WHERE tenant_id = $1", tenant)
        head_seq = head["head_seq"] if head else 0

        frontier = await check_from(conn, tenant, state["verified_seq"], bytes(state["verified_hash"]),
                                    min(head_seq, state["verified_seq"] + max_rows), book)
        finding = frontier.finding or await _head_finding(conn, tenant, head_seq, state["verified_seq"])
        if finding is None:
            # Content erased behind the pipeline's back, at any row checked so far (erasure leaves hashes intact).
            finding = await unrecorded_erasure(conn, tenant, frontier.seq)
        if finding is None and head is not None and frontier.seq == head_seq and head_seq > 0 \
                and bytes(head["head_hash"]) != frontier.hash:
            finding = Break(tenant, head_seq, "modified", "the chain head's hash differs from the last row's hash")

        rescan_seq, rescan_hash, full_pass_at = state["rescan_seq"], bytes(state["rescan_hash"]), None
        if finding is None and rescan_rows > 0:
            rescan = await check_from(conn, tenant, rescan_seq, rescan_hash,
                                      min(frontier.seq, rescan_seq + rescan_rows), book)
            finding = rescan.finding
            rescan_seq, rescan_hash = rescan.seq, rescan.hash
            if finding is None and rescan_seq >= frontier.seq:
                if rescan_seq > 0 and rescan_hash != frontier.hash:
                    finding = Break(tenant, rescan_seq, "modified", "a rescan reached a different head hash")
                else:
                    # One full pass is complete: start the next one from the genesis.
                    rescan_seq, rescan_hash, full_pass_at = 0, GENESIS_HASH, now
        status = "broken" if finding else ("ok" if frontier.seq == head_seq else "pending")
        await conn.execute(
            "UPDATE report_chain_status SET verified_seq = $2, verified_hash = $3, rescan_seq = $4, rescan_hash = $5,"
            " last_full_pass_at = coalesce($6, last_full_pass_at), status = $7, break_seq = $8, break_kind = $9,"
            " break_detail = $10, checked_at = $11 WHERE tenant_id = $1",
            tenant, frontier.seq, frontier.hash, rescan_seq, rescan_hash, full_pass_at, status,
            finding.chain_seq if finding else None, finding.kind if finding else None,
            finding.detail if finding else None, now,
        )
        return PassResult(tenant, frontier.rows, status)


async def _head_finding(conn: asyncpg.Connection, tenant: str, head_seq: int, verified_seq: int) -> Break | None:
    """A head moved backwards: rows past it (rewound), or rows already checked that are gone (cut off)."""
    last = await conn.fetchval("SELECT max(chain_seq) FROM audit_logs WHERE tenant_id = $1", tenant) or 0
    if last > head_seq:
        return Break(tenant, head_seq + 1, "head_mismatch",
                     f"the chain head is at {head_seq}, but the rows go on to {last} (head rewound?)")
    if verified_seq > head_seq:
        return Break(tenant, head_seq + 1, "truncated",
                     f"rows up to {verified_seq} were checked, the chain now ends at {head_seq}")
    return None


async def key_book(conn: asyncpg.Connection, pinned: Mapping[str, bytes] | None = None) -> KeyBook:
    return await load_key_book(conn, pinned)


async def tenants_to_check(conn: asyncpg.Connection) -> list[str]:
    # In the database's collation, as listed before tenant_id compared as bytes (migration 1000).
    rows = await conn.fetch('SELECT tenant_id FROM chain_heads ORDER BY tenant_id COLLATE "default"')
    return [row["tenant_id"] for row in rows]
