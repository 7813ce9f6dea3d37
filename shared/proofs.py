# ruff: noqa: S608 - SQL is assembled only from this module's constants; every value is a bind parameter.
"""Inclusion and consistency proofs read from PostgreSQL, for the reporter and ``auditctl``.

Any proof needs at most 2*log2(n) stored subtree records (``merkle_subtrees``, by primary key, with the
row hashes of the leaves of the small subtrees that have none, in one query); shared/merkle.py names them
and folds them. Signed tree heads live beside the checkpoints (``chain_checkpoints.tree_root``/
``tree_signature``, migration 0800).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from shared.chain import HASHED_COLUMNS, format_timestamp, stored_canonical_bytes
from shared.merkle import (
    HASH_SIZE,
    Frontier,
    NodeId,
    Range,
    consistency_ranges,
    inclusion_ranges,
    leaf_hash,
    nodes_for,
    range_hash,
    record_of,
    tree_hash,
)
from shared.treehead import TreeHead

# Newest tree heads per page of ``tree_heads``.
TREE_HEADS_PAGE = 1_000


class ProofUnavailable(Exception):
    """A proof cannot be given for the sizes asked (the message says why); never a server fault."""


async def tree_size(conn: asyncpg.Connection, tenant: str) -> int:
    """The committed size of the tenant's tree (its chain head)."""
    size = await conn.fetchval("SELECT head_seq FROM chain_heads WHERE tenant_id = $1", tenant)
    return int(size or 0)


def _tree_head(tenant: str, row: Mapping[str, Any]) -> TreeHead:
    return TreeHead(tenant, row["chain_seq"], bytes(row["tree_root"]), format_timestamp(row["created_at"]),
                    row["key_id"], bytes(row["tree_signature"]))


_HEAD_COLUMNS = "chain_seq, tree_root, created_at, key_id, tree_signature"


async def tree_head(conn: asyncpg.Connection, tenant: str, size: int | None = None) -> TreeHead | None:
    """The signed tree head of ``size`` leaves, or the newest one; None if there is none."""
    if size is None:
        row = await conn.fetchrow(
            f"SELECT {_HEAD_COLUMNS} FROM chain_checkpoints WHERE tenant_id = $1 AND tree_root IS NOT NULL"
            " ORDER BY chain_seq DESC LIMIT 1", tenant)
    else:
        row = await conn.fetchrow(
            f"SELECT {_HEAD_COLUMNS} FROM chain_checkpoints WHERE tenant_id = $1 AND chain_seq = $2"
            " AND tree_root IS NOT NULL", tenant, size)
    return None if row is None else _tree_head(tenant, row)


async def tree_heads(conn: asyncpg.Connection, tenant: str, after: int = 0,
                     limit: int = TREE_HEADS_PAGE) -> list[TreeHead]:
    """Signed tree heads larger than ``after``, smallest first."""
    rows = await conn.fetch(
        f"SELECT {_HEAD_COLUMNS} FROM chain_checkpoints WHERE tenant_id = $1 AND chain_seq > $2"
        " AND tree_root IS NOT NULL ORDER BY chain_seq LIMIT $3", tenant, after, limit)
    return [_tree_head(tenant, row) for row in rows]


# A leaf gets a ``merkle_subtrees`` record only when it completes a subtree of RECORD_LEVEL or above (its index
# ends in RECORD_LEVEL one bits): a quarter of the rows. A subtree below that level (of at most two leaves) is
# hashed from the row hashes of its leaves, which audit_logs holds anyway. Records of other leaves, written
# before the signer left them out, are used as they are: they hold the same hashes.
RECORD_LEVEL = 2
RECORD_MASK = (1 << RECORD_LEVEL) - 1


def has_record(leaf: int) -> bool:
    """Whether the signer writes a ``merkle_subtrees`` record for ``leaf``."""
    return leaf & RECORD_MASK == RECORD_MASK


# The records of the leaves asked ($2), and the row hashes ($3: chain_seq) of the leaves of the subtrees asked
# that may have no record.
_SUBTREE_RECORDS = """
SELECT leaf_index, hashes, NULL::bytea AS row_hash FROM merkle_subtrees
WHERE tenant_id = $1 AND leaf_index = ANY($2::bigint[])
UNION ALL
SELECT chain_seq - 1, NULL::bytea, row_hash FROM audit_logs WHERE tenant_id = $1 AND chain_seq = ANY($3::bigint[])
"""


def _leaves(node: NodeId) -> range:
    level, index = node
    return range(index << level, (index + 1) << level)


async def subtrees(conn: asyncpg.Connection, tenant: str, nodes: set[NodeId]) -> dict[NodeId, bytes]:
    """The stored hashes of ``nodes`` (complete subtrees), in one query."""
    where = {node: record_of(node) for node in nodes}
    # A subtree whose last leaf has no record is below RECORD_LEVEL: its leaves' row hashes are read too.
    low = [node for node, (leaf, _) in where.items() if not has_record(leaf)]
    seqs = sorted({leaf + 1 for node in low for leaf in _leaves(node)})
    rows = await conn.fetch(_SUBTREE_RECORDS, tenant, sorted({leaf for leaf, _ in where.values()}), seqs)
    stored = {row["leaf_index"]: bytes(row["hashes"]) for row in rows if row["hashes"] is not None}
    leaves = {row["leaf_index"]: leaf_hash(bytes(row["row_hash"])) for row in rows if row["row_hash"] is not None}
    found = {}
    for node, (leaf, offset) in where.items():
        hashes = stored.get(leaf, b"")
        if len(hashes) >= offset + HASH_SIZE:
            found[node] = hashes[offset:offset + HASH_SIZE]
        elif not has_record(leaf) and all(index in leaves for index in _leaves(node)):
            found[node] = tree_hash([leaves[index] for index in _leaves(node)])
        else:
            raise ProofUnavailable(f"the tree's subtree {node} is not stored")
    return found


async def _hashes(conn: asyncpg.Connection, tenant: str, ranges: list[Range]) -> list[bytes]:
    found = await subtrees(conn, tenant, nodes_for(ranges))
    return [range_hash(span, found) for span in ranges]


async def _check_size(conn: asyncpg.Connection, tenant: str, size: int) -> None:
    committed = await tree_size(conn, tenant)
    if size > committed:
        raise ProofUnavailable(f"tree size {size} is beyond the tree's {committed} leaves")


async def root_hash(conn: asyncpg.Connection, tenant: str, size: int) -> bytes:
    if size < 1:
        raise ProofUnavailable("a tree of no leaves has no stored root")
    await _check_size(conn, tenant, size)
    return (await _hashes(conn, tenant, [(0, size)]))[0]


async def inclusion(conn: asyncpg.Connection, tenant: str, leaf_index: int, size: int, *,
                    signed: bool = False) -> dict[str, Any]:
    """``{leaf_index, tree_size, path, root_hash}`` (hex), RFC 9162 2.1.3. ``signed``: the size is a signed tree
    head's, so the tree is known to reach it (one query less)."""
    if not 0 <= leaf_index < size:
        raise ProofUnavailable(f"leaf {leaf_index} is not in a tree of {size} leaves")
    if not signed:
        await _check_size(conn, tenant, size)
    ranges = inclusion_ranges(leaf_index, size)
    hashes = await _hashes(conn, tenant, [*ranges, (0, size)])
    return {"leaf_index": leaf_index, "tree_size": size, "path": [h.hex() for h in hashes[:-1]],
            "root_hash": hashes[-1].hex()}


async def consistency(conn: asyncpg.Connection, tenant: str, first: int, second: int) -> dict[str, Any]:
    """``{first, second, first_root, second_root, path}`` (hex), RFC 9162 2.1.4."""
    if not 0 < first <= second:
        raise ProofUnavailable("sizes must satisfy 0 < first <= second")
    await _check_size(conn, tenant, second)
    ranges = consistency_ranges(first, second)
    hashes = await _hashes(conn, tenant, [*ranges, (0, first), (0, second)])
    return {"first": first, "second": second, "first_root": hashes[-2].hex(), "second_root": hashes[-1].hex(),
            "path": [h.hex() for h in hashes[:-2]]}


async def leaf_index_of(conn: asyncpg.Connection, tenant: str, record_id: int) -> int | None:
    seq = await conn.fetchval("SELECT chain_seq FROM audit_logs WHERE id = $1 AND tenant_id = $2", record_id, tenant)
    return None if seq is None else int(seq) - 1


async def record_inclusion(conn: asyncpg.Connection, tenant: str, chain_seq: int,
                           size: int | None = None) -> dict[str, Any]:
    """``{"inclusion": ..., "tree_head": ...}`` for the row at ``chain_seq``: against the signed tree head of
    ``size`` leaves, or the newest one. ``inclusion`` is None while no signed head covers the row yet."""
    head = await tree_head(conn, tenant, size)
    if head is None:
        if size is not None:
            raise ProofUnavailable(f"no signed tree head of size {size}")
        return {"inclusion": None, "tree_head": None}
    if head.tree_size < chain_seq:
        if size is not None:
            raise ProofUnavailable(f"the tree head of size {size} does not cover sequence {chain_seq}")
        return {"inclusion": None, "tree_head": head.to_dict()}
    return {"inclusion": await inclusion(conn, tenant, chain_seq - 1, head.tree_size, signed=True),
            "tree_head": head.to_dict()}


_ROW_COLUMNS = ", ".join(
    dict.fromkeys(("id", *HASHED_COLUMNS, "prev_hash", "row_hash", "signature", "content_digest"))
)


async def record_document(conn: asyncpg.Connection, record_id: int, size: int | None = None,
                          tenant: str | None = None) -> dict[str, Any] | None:
    """What ``shared.proofcheck.check_inclusion`` needs about one row, and its inclusion proof; None if there is
    no such row (of ``tenant``, when given)."""
    row = await conn.fetchrow(
        f"SELECT {_ROW_COLUMNS} FROM audit_logs WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
        record_id, tenant)
    if row is None:
        return None
    canonical = stored_canonical_bytes(row)
    return {
        "record_id": row["id"],
        "tenant_id": row["tenant_id"],
        "chain_seq": row["chain_seq"],
        "canonical_bytes": base64.b64encode(canonical).decode(),
        "prev_hash": bytes(row["prev_hash"]).hex(),
        "row_hash": bytes(row["row_hash"]).hex(),
        "signature": base64.b64encode(bytes(row["signature"])).decode(),
        "signing_key_id": row["signing_key_id"],
        **await record_inclusion(conn, row["tenant_id"], row["chain_seq"], size),
    }


async def consistency_document(conn: asyncpg.Connection, tenant: str, first: int, second: int) -> dict[str, Any]:
    """A consistency proof with the signed tree heads of both sizes where they exist (else null)."""
    document = await consistency(conn, tenant, first, second)
    for key, size in (("first_tree_head", first), ("second_tree_head", second)):
        head = await tree_head(conn, tenant, size)
        document[key] = None if head is None else head.to_dict()
    document["tenant_id"] = tenant
    return document


@dataclass
class TreeAudit:
    """What ``audit_tree`` found: the tree recomputed from the chain's row hashes against what is stored."""

    tenant_id: str
    leaves: int = 0
    heads_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def audit_tree(conn: asyncpg.Connection, tenant: str, pinned: list[bytes] | None = None,
                     max_problems: int = 10) -> TreeAudit:
    """Recompute the tenant's tree from its row hashes (O(n), streamed) and compare every stored subtree
    record, the stored frontier and every signed tree head (its root, and its signature when ``pinned`` keys
    are given) with it."""
    report = TreeAudit(tenant)
    heads = {head.tree_size: head for head in await _all_heads(conn, tenant)}
    frontier = Frontier()

    def problem(text: str) -> bool:
        report.problems.append(text)
        return len(report.problems) >= max_problems

    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        head_seq = await tree_size(conn, tenant)
        stored_frontier = await conn.fetchval("SELECT merkle_frontier FROM chain_heads WHERE tenant_id = $1", tenant)
        rows = conn.cursor(
            "SELECT a.chain_seq, a.row_hash, m.hashes FROM audit_logs a LEFT JOIN merkle_subtrees m"
            " ON m.tenant_id = a.tenant_id AND m.leaf_index = a.chain_seq - 1"
            " WHERE a.tenant_id = $1 AND a.chain_seq <= $2 ORDER BY a.chain_seq", tenant, head_seq, prefetch=10_000)
        async for row in rows:
            seq = row["chain_seq"]
            if seq != frontier.size + 1:
                problem(f"sequence {frontier.size + 1}: row missing (next row is {seq}); the tree stops here")
                break
            frontier, completed = frontier.append(bytes(row["row_hash"]))
            found = []
            if row["hashes"] is None:
                if has_record(seq - 1):  # the signer writes no record for the others
                    found.append(f"leaf {seq - 1}: stored subtrees missing")
            elif bytes(row["hashes"]) != completed:
                found.append(f"leaf {seq - 1}: stored subtrees differ from the row hashes")
            head = heads.get(seq)
            if head is not None:
                report.heads_checked += 1
                if head.root_hash != frontier.root():
                    found.append(f"tree head {seq}: signed root differs from the tree of the rows")
                if pinned is not None and not head.signed_by(pinned):
                    found.append(f"tree head {seq}: not signed by a pinned key")
            if any([problem(text) for text in found]):
                return report
    report.leaves = frontier.size
    if frontier.size < head_seq:
        problem(f"rows end at sequence {frontier.size} but the chain head is at {head_seq} (rows removed?)")
    if frontier.size == head_seq and bytes(stored_frontier or b"") != frontier.to_bytes():
        problem("chain head: stored frontier differs from the tree of the rows")
    beyond = [size for size in heads if size > frontier.size]
    if beyond:
        problem(f"tree heads beyond the {frontier.size} rows there are: {sorted(beyond)[:5]} (rows removed?)")
    return report


async def _all_heads(conn: asyncpg.Connection, tenant: str) -> list[TreeHead]:
    heads, after = [], 0
    while page := await tree_heads(conn, tenant, after):
        heads += page
        after = page[-1].tree_size
    return heads
