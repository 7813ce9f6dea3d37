"""Recomputes every chain from the rows alone and checks every signature against the published keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from shared.chain import GENESIS_HASH, HASH_VERSION, HASHED_COLUMNS, canonical_bytes, row_hash
from shared.keys import verify_signature

_SELECT = (
    "SELECT " + ", ".join(dict.fromkeys((*HASHED_COLUMNS, "prev_hash", "row_hash", "signature")))
    + " FROM audit_logs WHERE tenant_id = $1 AND chain_seq > $2 ORDER BY chain_seq LIMIT $3"
)


@dataclass(frozen=True)
class Break:
    tenant_id: str
    chain_seq: int
    kind: str
    detail: str


@dataclass
class TenantReport:
    tenant_id: str
    rows: int = 0
    head_seq: int = 0
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks


async def _rows(conn: asyncpg.Connection, tenant: str, page: int) -> AsyncIterator[Any]:
    after = 0
    while True:
        rows = await conn.fetch(_SELECT, tenant, after, page)
        for row in rows:
            yield row
        if len(rows) < page:
            return
        after = rows[-1]["chain_seq"]


async def verify_tenant(conn: asyncpg.Connection, tenant: str, keys: dict[str, bytes],
                        page: int = 5_000) -> TenantReport:
    report = TenantReport(tenant)
    expected_seq, prev = 1, GENESIS_HASH
    async for row in _rows(conn, tenant, page):
        seq = row["chain_seq"]
        report.rows += 1
        if seq != expected_seq:
            kind = "deleted" if seq > expected_seq else "inserted"
            report.breaks.append(Break(tenant, expected_seq, kind, f"expected sequence {expected_seq}, found {seq}"))
            return report
        if row["hash_version"] != HASH_VERSION:
            report.breaks.append(Break(tenant, seq, "modified", f"unknown hash version {row['hash_version']}"))
            return report
        if bytes(row["prev_hash"]) != prev:
            report.breaks.append(Break(tenant, seq, "reordered", "prev_hash does not link to the previous row"))
            return report
        digest = row_hash(prev, canonical_bytes(row))
        if digest != bytes(row["row_hash"]):
            report.breaks.append(Break(tenant, seq, "modified", "row contents do not match row_hash"))
            return report
        public_key = keys.get(row["signing_key_id"])
        if public_key is None:
            report.breaks.append(Break(tenant, seq, "bad_signature", f"unknown key {row['signing_key_id']}"))
            return report
        if not verify_signature(public_key, digest, bytes(row["signature"])):
            report.breaks.append(Break(tenant, seq, "bad_signature", "signature does not verify"))
            return report
        prev = digest
        expected_seq = seq + 1
    report.head_seq = expected_seq - 1
    head = await conn.fetchrow("SELECT head_seq, head_hash FROM chain_heads WHERE tenant_id = $1", tenant)
    if head is not None and head["head_seq"] > report.head_seq:
        report.breaks.append(Break(tenant, report.head_seq + 1, "truncated",
                                   f"chain head is at {head['head_seq']}, rows stop at {report.head_seq}"))
    return report


async def published_keys(conn: asyncpg.Connection) -> dict[str, bytes]:
    return {row["key_id"]: bytes(row["public_key"]) for row in await conn.fetch(
        "SELECT key_id, public_key FROM signing_keys")}


async def tenants(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT tenant_id FROM chain_heads UNION SELECT DISTINCT tenant_id FROM audit_logs ORDER BY 1"
    )
    return [row["tenant_id"] for row in rows]
