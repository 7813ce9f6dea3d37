"""``chain_rows`` (the signer's hashing loop, with its fast paths) against the definitions: every row's canonical
bytes by RFC 8785 (the rfc8785 package), its content digest, row hash, Merkle subtrees and the heads it leaves,
for rows of every kind ``decode_row`` hands over; and the rows are left as they were."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.signer.appender import CHAIN_COLUMNS, GENESIS, INSERT_COLUMNS, Head, chain_rows
from services.signer.rows import ChainRow, decode_row
from shared.chain import (
    DOMAIN_TAG_V2,
    HASHED_COLUMNS_V2,
    _normalise,
    _normalise_json,
    canonical_bytes_v2_checked,
    content_digest,
    plain_content_digest,
    row_hash,
)
from shared.keys import Ed25519Signer
from shared.merkle import leaf_hash, tree_hash
from shared.proofs import has_record
from tests.unit.signer.test_rows import message

SIGNER = Ed25519Signer.generate()
NOW = datetime(2026, 12, 5, tzinfo=UTC)


class _NoSignatures:
    async def sign_many(self, digests: Sequence[bytes]) -> list[bytes]:
        return [b"s" * 64] * len(digests)

    async def close(self) -> None:
        return None


def reference_digest(salt: bytes, content: Any) -> bytes:
    return hashlib.sha256(salt + rfc8785.dumps(_normalise_json(content))).digest()


def reference_canonical(values: dict[str, Any], seq: int, committed: bytes) -> bytes:
    document = {**values, "chain_seq": seq, "signing_key_id": SIGNER.key_id, "hash_version": 2,
                "content_digest": committed.hex()}
    return bytes(rfc8785.dumps({column: _normalise(document[column]) for column in HASHED_COLUMNS_V2}))


def completed_subtrees(leaves: list[bytes], index: int) -> bytes:
    """The hashes of the complete subtrees leaf ``index`` completes, levels 0 up, by MTH itself."""
    out, level = [], 0
    while True:
        width = 1 << level
        start = index + 1 - width
        if start < 0 or start % width:
            break
        out.append(tree_hash(leaves[start:index + 1]))
        level += 1
    return b"".join(out)


def check_chained(rows: list[ChainRow], batches: int = 2) -> None:
    before = [dict(row.values) for row in rows]
    heads = {row.tenant_id: replace(GENESIS) for row in rows}
    prev = dict.fromkeys(heads, GENESIS.hash)
    leaves: dict[str, list[bytes]] = {tenant: [] for tenant in heads}
    size = -(-len(rows) // batches)
    for first in range(0, len(rows), size):
        batch = rows[first:first + size]
        chained = asyncio.run(_chain(batch, heads))
        # The key is activated on each chain it has not signed yet, from its first row, in the order of the rows.
        new_chains = [tenant for tenant in dict.fromkeys(row.tenant_id for row in batch) if not leaves[tenant]]
        assert chained.activations == [(tenant, 1, SIGNER.key_id) for tenant in new_chains]
        assert len(chained.records) == len(chained.contents) == len(batch)
        subtrees = iter(chained.subtrees)
        for row, record, stored in zip(batch, chained.records, chained.contents, strict=True):
            tenant = row.tenant_id
            values = dict(zip(INSERT_COLUMNS, record, strict=True))
            seq = len(leaves[tenant]) + 1
            salt = stored[2]
            assert stored == (tenant, seq, salt, row.values["content"]) and len(salt) == 32
            committed = reference_digest(salt, row.values["content"])
            canonical = reference_canonical(row.values, seq, committed)
            digest = hashlib.sha256(DOMAIN_TAG_V2 + prev[tenant] + canonical).digest()
            assert values["chain_seq"] == seq and values["prev_hash"] == prev[tenant]
            assert values["content_digest"] == committed
            assert values["row_hash"] == digest
            assert (values["signing_key_id"], values["hash_version"]) == (SIGNER.key_id, 2)
            assert all(values[c] == row.values[c] for c in INSERT_COLUMNS if c not in CHAIN_COLUMNS)
            prev[tenant] = digest
            leaves[tenant].append(leaf_hash(digest))
            if has_record(seq - 1):  # a merkle_subtrees record only for the leaves the readers look one up for
                assert next(subtrees) == (tenant, seq - 1, completed_subtrees(leaves[tenant], seq - 1))
        assert next(subtrees, None) is None
    for tenant, head in heads.items():
        assert (head.seq, head.hash, head.key_id) == (len(leaves[tenant]), prev[tenant], SIGNER.key_id)
        assert head.tree.root() == tree_hash(leaves[tenant]) if leaves[tenant] else True
    for row, values in zip(rows, before, strict=True):
        # The chain columns are set on the row; everything else is as decoded (content too).
        assert {k: v for k, v in row.values.items() if k not in ("chain_seq", "signing_key_id", "hash_version")} \
            == {k: v for k, v in values.items() if k not in ("chain_seq", "signing_key_id", "hash_version")}


async def _chain(batch: list[ChainRow], heads: dict[str, Head]) -> Any:
    chained = await chain_rows(batch, heads, SIGNER, None, NOW, _NoSignatures())
    return await chained.complete()


def decoded(**changes: Any) -> ChainRow:
    return decode_row(json.dumps(message(**changes)).encode())


KINDS: list[dict[str, Any]] = [
    {},
    {"content": {}, "content_lengths": {}, "redacted_fields": {}},
    {"event_time": "2026-01-01T00:00:00+00:00"},  # whole seconds: orjson would leave out the fraction
    {"received_at": "2026-01-01T00:00:00Z", "event_time": "2026-01-01T00:00:00.000001+02:00"},
    {"event_time": "2026-01-01T00:00:00Z", "received_at": "2026-01-01T00:00:00Z", "content": {}},
    {"attributes": {"n": 2**53}},  # beyond a double: the general path decides
    {"attributes": {"ratio": 0.5, "ä": 1}},  # not plain
    {"content": {"prompt": "\u0000 NUL and \u2028", "ä": "x"}},  # not plain content
    {"cost": "12345678901234.1234565"},
    {"cost": None, "attributes": {"a": [1, None, True, "é"], "Z": {"k": -(2**53 - 1)}}},
]


def test_every_kind_of_row_chains_to_the_defined_hashes() -> None:
    rows = [decoded(event_id=f"e{i}", tenant_id=f"t{i % 3}", **KINDS[i % len(KINDS)]) for i in range(70)]
    check_chained(rows, batches=3)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60), st.text(max_size=8),
                         st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_leaves=8)
timestamps = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda t: t.replace(tzinfo=UTC).isoformat())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({
    "tenant_id": st.sampled_from(["t1", "t2"]),
    "event_time": timestamps,
    "received_at": timestamps,
    "content": st.dictionaries(st.text(max_size=6), st.text(max_size=12), max_size=3),
    "attributes": st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    "cost": st.one_of(st.none(), st.decimals(min_value=0, max_value=10**6, places=7).map(str)),
}), min_size=1, max_size=12))
def test_random_rows_chain_to_the_defined_hashes(changes: list[dict[str, Any]]) -> None:
    rows = []
    for i, change in enumerate(changes):
        try:
            rows.append(decoded(event_id=f"e{i}", **change))
        except ValueError:  # dead-lettered by decode, never chained
            continue
    if rows:
        check_chained(rows)


def test_the_fast_digest_and_bytes_match_the_definitions_for_empty_content() -> None:
    salt = bytes(range(32))
    assert plain_content_digest(salt, {}) == content_digest(salt, {}) == reference_digest(salt, {})
    row = decoded(content={}, event_time="2026-01-01T00:00:00Z", received_at="2026-01-01T00:00:00Z")
    values = {**row.values, "chain_seq": 3, "signing_key_id": SIGNER.key_id, "hash_version": 2}
    committed = plain_content_digest(salt, values["content"])
    assert canonical_bytes_v2_checked(values, committed) == reference_canonical(row.values, 3, committed)
    assert row_hash(b"p" * 32, b"{}", 2) == hashlib.sha256(DOMAIN_TAG_V2 + b"p" * 32 + b"{}").digest()
