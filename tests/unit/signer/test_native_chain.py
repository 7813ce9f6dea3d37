"""The compiled path of ``chain_rows`` (``services/signer/_native_chain.c``) against its definition, the Python
path: the same records, row hashes, canonical bytes (through the hashes), content digests, Merkle records and
frontiers, activations and checkpoints, and the rows' values left the same (key order too), for generated
batches of plain and other rows, on several chains, from heads mid-tree, with SHA-256 both on the CPU's SHA
extensions and through hashlib.

A checkout where the compiled module was not built skips the comparisons; where it must be built:
test_native_built."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.signer import appender
from services.signer.appender import GENESIS, CheckpointPolicy, Head, chain_rows
from services.signer.rows import ChainRow, decode_row
from shared.keys import Ed25519Signer
from shared.merkle import Frontier
from tests.unit.signer.test_chain_rows import KINDS
from tests.unit.signer.test_rows import message

SIGNER = Ed25519Signer.generate()
OTHER_KEY = "retired-key"
NOW = datetime(2026, 12, 5, tzinfo=UTC)
POLICY = CheckpointPolicy(every_rows=7)

compiled = pytest.mark.skipif(appender._chain_plain is None, reason="services.signer._native_chain is not built"
                              " (or the pure-Python path is meant)")


class _NoSignatures:
    async def sign_many(self, digests: Sequence[bytes]) -> list[bytes]:
        return [b"s" * 64] * len(digests)

    async def close(self) -> None:
        return None


@contextmanager
def _salts() -> Iterator[None]:
    """The same salts for each run: os.urandom from a fixed seed."""
    source = random.Random(17)
    with mock.patch.object(os, "urandom", source.randbytes):
        yield


def _chained(rows: list[ChainRow], heads: dict[str, Head], cuts: list[int], *, native: bool) -> Any:
    rows, heads = copy.deepcopy(rows), copy.deepcopy(heads)
    batches = []

    async def chain() -> None:
        for first, stop in zip([0, *cuts], [*cuts, len(rows)], strict=True):
            chained = await chain_rows(rows[first:stop], heads, SIGNER, POLICY, NOW, _NoSignatures())
            batches.append(await chained.complete())

    with _salts(), mock.patch.object(appender, "_chain_plain", appender._chain_plain if native else None):
        asyncio.run(chain())
    return (
        [(b.records, b.contents, b.subtrees, b.activations, b.checkpoints) for b in batches],
        {tenant: (h.seq, h.hash, h.key_id, h.tree, h.checkpoint_seq) for tenant, h in heads.items()},
        [list(row.values.items()) for row in rows],
    )


def check_same(rows: list[ChainRow], heads: dict[str, Head], cuts: list[int]) -> None:
    from services.signer import _native_chain  # noqa: PLC0415 (built: the tests calling this are marked)

    expected = _chained(rows, heads, cuts, native=False)
    try:
        for on_cpu in (True, False):
            _native_chain.hash_with_cpu(on_cpu)
            assert _chained(rows, heads, cuts, native=True) == expected
    finally:
        _native_chain.hash_with_cpu(True)


def head_at(seq: int, key_id: str | None) -> Head:
    """A chain ``seq`` rows long, its tree of made-up leaves."""
    tree = Frontier()
    for leaf in range(seq):
        tree, _ = tree.append(leaf.to_bytes(32, "big"))
    return Head(seq, bytes([seq % 256]) * 32, key_id, seq, NOW - timedelta(minutes=5), tree)


def decoded(**changes: Any) -> ChainRow | None:
    try:
        return decode_row(json.dumps(message(**changes)).encode())
    except ValueError:  # dead-lettered by decode, never chained
        return None


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60), st.text(max_size=6),
                         st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_leaves=6)
instants = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1))
timestamps = st.one_of(
    instants.map(lambda t: t.replace(tzinfo=UTC).isoformat()),
    instants.map(lambda t: t.replace(microsecond=0, tzinfo=UTC).isoformat()),  # whole seconds
    instants.map(lambda t: t.replace(microsecond=0).isoformat() + "+02:00"),
)
row_changes = st.one_of(
    st.sampled_from(KINDS),
    st.fixed_dictionaries({
        "event_time": timestamps,
        "received_at": timestamps,
        "content": st.one_of(st.just({}), st.dictionaries(st.text(max_size=6), st.text(max_size=12), max_size=3)),
        "attributes": st.dictionaries(st.text(max_size=6), json_values, max_size=3),
        "cost": st.one_of(st.none(), st.decimals(min_value=-(10**6), max_value=10**6, places=7).map(str)),
    }),
)


@compiled
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(["t1", "t2", "t3"]), row_changes), min_size=1, max_size=45),
    st.dictionaries(st.sampled_from(["t1", "t2", "t3"]),
                    st.tuples(st.integers(0, 70), st.sampled_from([None, OTHER_KEY, SIGNER.key_id]))),
    st.lists(st.integers(0, 45), max_size=2),
)
def test_the_compiled_path_gives_the_python_paths_results(
    changes: list[tuple[str, dict[str, Any]]], positions: dict[str, tuple[int, str | None]], cuts: list[int]
) -> None:
    rows = [row for i, (tenant, change) in enumerate(changes)
            if (row := decoded(event_id=f"e{i}", tenant_id=tenant, **change)) is not None]
    heads = {tenant: replace(GENESIS) for tenant in ("t1", "t2", "t3")}
    heads.update({tenant: head_at(seq, key) for tenant, (seq, key) in positions.items()})
    check_same(rows, heads, sorted({cut for cut in cuts if 0 < cut < len(rows)}))


@compiled
def test_the_benchs_rows_chain_the_same_either_way() -> None:
    from tests.bench.bench_signer_replay import decode_all, messages  # noqa: PLC0415

    batch, keyring = messages(300, 4)
    rows = decode_all(batch, keyring)
    assert all(row.plain for row in rows)
    heads = {row.tenant_id: replace(GENESIS) for row in rows}
    check_same(rows, heads, [100, 117])


@compiled
def test_rows_of_every_kind_in_one_chunk_switch_paths_and_back() -> None:
    rows = [row for i in range(40)
            if (row := decoded(event_id=f"e{i}", tenant_id=f"t{i % 2}", **KINDS[i % len(KINDS)])) is not None]
    assert any(not row.plain for row in rows) and any(row.plain for row in rows)
    rows.append(rows[0]._replace(values={**rows[0].values, "cost": Decimal("12.345600")}))
    check_same(rows, {"t0": head_at(3, None), "t1": replace(GENESIS)}, [])
