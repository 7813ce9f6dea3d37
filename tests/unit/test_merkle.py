"""shared/merkle.py against the RFC 9162 recursive definitions and two independent implementations from
PyPI: tamperlog (RFC 6962/9162 proof verifiers taking the RFC's own proof format) and pymerkle (its own
tree, whose roots and inclusion paths must equal ours; its proofs carry the leaf first and say which side
each hash joins on, a layout pymerkle computes itself)."""

from __future__ import annotations

import hashlib

import pymerkle
import pytest
from pymerkle.core import _inclusion_path_layout
from tamperlog import merkle as tamperlog

from shared.merkle import (
    EMPTY_ROOT,
    Frontier,
    complete_subtrees,
    consistency_ranges,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    range_hash,
    record_of,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)


def entries(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


def stored_tree(values: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every complete subtree, as the signer stores them (by the leaf whose append completed them)."""
    frontier, records = Frontier(), {}
    for i, value in enumerate(values):
        frontier, records[i] = frontier.append(value)
    nodes = {}
    for level in range(64):
        for index in range(len(values) >> level):
            leaf, offset = record_of((level, index))
            nodes[(level, index)] = records[leaf][offset:offset + 32]
    return nodes


def rfc_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) written as RFC 9162 2.1.3.1 states it."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*rfc_path(m, leaves[:k]), tree_hash(leaves[k:])]
    return [*rfc_path(m - k, leaves[k:]), tree_hash(leaves[:k])]


def rfc_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [tree_hash(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*rfc_subproof(m, leaves[:k], whole), tree_hash(leaves[k:])]
    return [*rfc_subproof(m - k, leaves[k:], False), tree_hash(leaves[:k])]


def test_empty_and_single() -> None:
    assert Frontier().root() == EMPTY_ROOT == hashlib.sha256(b"").digest()
    one = Frontier().append(b"x" * 32)[0]
    assert one.root() == leaf_hash(b"x" * 32) == hashlib.sha256(b"\x00" + b"x" * 32).digest()
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


@pytest.mark.parametrize("n", [*range(1, 70), 127, 128, 129, 1000, 1025])
def test_roots_paths_and_proofs_match_the_rfc_and_pymerkle(n: int) -> None:
    values = entries(n)
    leaves = [leaf_hash(v) for v in values]
    nodes = stored_tree(values)
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for value in values:
        tree.append_entry(value)
    frontier = Frontier()
    for size, value in enumerate(values, start=1):
        frontier = frontier.append(value)[0]
        assert frontier.root() == tree_hash(leaves[:size]) == tree.get_state(size) == range_hash((0, size), nodes)
        assert Frontier.from_bytes(size, frontier.to_bytes()) == frontier
    root = tree_hash(leaves)
    for m in sorted({0, 1, n // 3, n // 2, n - 1} & set(range(n))):
        path = [range_hash(span, nodes) for span in inclusion_ranges(m, n)]
        assert path == rfc_path(m, leaves)
        assert len(path) <= 1 + 2 * max(1, n).bit_length()
        assert verify_inclusion(m, n, leaves[m], path, root)
        assert not verify_inclusion(m, n, leaf_hash(b"tampered"), path, root)
        rule, _ = _inclusion_path_layout(m + 1, n)
        theirs = pymerkle.InclusionProof("sha256", True, n, m + 1, rule, [leaves[m], *path])
        pymerkle.verify_inclusion(leaves[m], root, theirs, index=m + 1, size=n)
        assert tree.prove_inclusion(m + 1, n).path[1:] == path
        tamperlog.verify_inclusion(m, n, leaves[m], path, root)
    for first in sorted({1, 2, n // 2, n - 1, n} & set(range(1, n + 1))):
        path = [range_hash(span, nodes) for span in consistency_ranges(first, n)]
        assert path == (rfc_subproof(first, leaves, True) if first < n else [])
        first_root = tree_hash(leaves[:first])
        assert verify_consistency(first, n, first_root, root, path)
        assert not verify_consistency(first, n, hashlib.sha256(b"other").digest(), root, path)
        tamperlog.verify_consistency(first, first_root, n, root, path)
        with pytest.raises(tamperlog.ProofError):
            tamperlog.verify_consistency(first, first_root, n, leaf_hash(b"rewritten"), path)
        # pymerkle lays consistency proofs out its own way (not RFC 9162's), so it checks roots only here.
        assert tree.get_state(first) == first_root


def test_complete_subtrees_are_aligned() -> None:
    assert complete_subtrees((0, 7)) == [(2, 0), (1, 2), (0, 6)]
    assert complete_subtrees((8, 13)) == [(2, 2), (0, 12)]
    assert record_of((2, 1)) == (7, 64)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        inclusion_ranges(5, 5)
    with pytest.raises(ValueError):
        consistency_ranges(0, 5)
    with pytest.raises(ValueError):
        Frontier.from_bytes(3, b"\x00" * 32)
    assert not verify_inclusion(5, 5, b"x" * 32, [], b"x" * 32)
    assert not verify_consistency(3, 2, b"", b"", [])
