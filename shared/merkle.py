"""RFC 9162 section 2.1 Merkle tree arithmetic over a chain's row hashes, and nothing else: no I/O.

One tree per tenant; its entries are the chain's ``row_hash`` values in ``chain_seq`` order (leaf index =
``chain_seq - 1``)::

    leaf hash = SHA-256(0x00 || row_hash)
    node hash = SHA-256(0x01 || left || right)
    MTH(D[n]) splits D at k, the largest power of two smaller than n

Storage keeps every *complete* subtree hash: the subtree of level L (2**L leaves) at index j covers the
leaves ``[j * 2**L, (j + 1) * 2**L)`` and becomes complete when its last leaf ``(j + 1) * 2**L - 1`` is
appended. Appending leaf i therefore completes the subtrees of levels 0..t, where t is the number of
trailing one bits of i; they are stored together, in one record keyed by leaf i (``SubtreeRecord``). The
signer stores records only for t >= 2 (``shared.proofs.RECORD_LEVEL``); readers hash the smaller subtrees
from the rows' ``row_hash``.
Every node any RFC 9162 proof names is either such a complete subtree or the hash of a range
``[start, end)`` on the right edge of a tree, which folds from at most log2(n) complete subtrees.

The "frontier" of a tree of size n is its complete subtrees along the top, left to right (one per set bit
of n): enough to append the next leaf and to compute the root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

Range = tuple[int, int]  # leaves [start, end)
NodeId = tuple[int, int]  # (level, index): the complete subtree of 2**level leaves starting at index << level


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(width: int) -> int:
    """k: the largest power of two strictly smaller than ``width`` (>= 2)."""
    return 1 << ((width - 1).bit_length() - 1)


def tree_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, by the RFC's recursive definition. Reference only: O(n)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = split_point(len(leaves))
    return node_hash(tree_hash(leaves[:k]), tree_hash(leaves[k:]))


# --- appending ---------------------------------------------------------------------------------------------

# SHA-256 with each prefix already absorbed: a copy and an update cost less than a new buffer per hash.
_LEAF_HASHER = hashlib.sha256(LEAF_PREFIX)
_NODE_HASHER = hashlib.sha256(NODE_PREFIX)


def append_leaf(stack: list[bytes], size: int, entry: bytes) -> bytes:
    """``Frontier.append`` in place, for appending many leaves: ``stack`` holds the frontier hashes of a tree
    of ``size`` leaves and is left holding those of ``size + 1``. Returns the hashes the leaf completed."""
    hasher = _LEAF_HASHER.copy()
    hasher.update(entry)
    node = hasher.digest()
    if not size & 1:  # half of all leaves complete no subtree but their own
        stack.append(node)
        return node
    completed = node
    while size & 1:
        hasher = _NODE_HASHER.copy()
        hasher.update(stack.pop())
        hasher.update(node)
        node = hasher.digest()
        completed += node
        size >>= 1
    stack.append(node)
    return completed


@dataclass(frozen=True)
class Frontier:
    """The complete subtrees along the top of a tree of ``size`` leaves, left to right."""

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def append(self, entry: bytes) -> tuple[Frontier, bytes]:
        """The tree with one more leaf, and the hashes it completed (levels 0..t, concatenated)."""
        stack = list(self.hashes)
        completed = append_leaf(stack, self.size, entry)
        return Frontier(self.size + 1, tuple(stack)), completed

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        node = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            node = node_hash(left, node)
        return node

    def to_bytes(self) -> bytes:
        return b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, size: int, packed: bytes) -> Frontier:
        hashes = tuple(packed[i:i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE))
        if len(hashes) != size.bit_count() or len(packed) != len(hashes) * HASH_SIZE:
            raise ValueError(f"frontier of {len(packed)} bytes does not fit a tree of {size} leaves")
        return cls(size, hashes)


# --- which subtrees a proof needs --------------------------------------------------------------------------

def complete_subtrees(span: Range) -> list[NodeId]:
    """The complete subtrees that make up ``span``, left to right, largest first.

    Every range RFC 9162 names starts at a multiple of a power of two at least as large as the range, so the
    greedy split is aligned and is exactly the RFC's own left-heavy split."""
    start, end = span
    nodes = []
    while start < end:
        level = (end - start).bit_length() - 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def range_hash(span: Range, subtrees: Mapping[NodeId, bytes]) -> bytes:
    """MTH of the leaves in ``span``, folded from its complete subtrees."""
    parts = [subtrees[node] for node in complete_subtrees(span)]
    node = parts[-1]
    for left in reversed(parts[:-1]):
        node = node_hash(left, node)
    return node


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose hashes form PATH(index, D[0:size]) (RFC 9162 2.1.3.1), leaf's sibling first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    siblings = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            siblings.append((start + k, end))
            end = start + k
        else:
            siblings.append((start, start + k))
            start += k
    siblings.reverse()
    return siblings


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The ranges whose hashes form PROOF(first, D[0:second]) (RFC 9162 2.1.4.1), deepest first."""
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from {first} to {second}")
    siblings = []
    start, prior, width, whole = 0, first, second, True  # whole: the RFC's b, prior is a left-edge subtree
    while prior != width:
        k = split_point(width)
        if prior <= k:
            siblings.append((start + k, start + width))
            width = k
        else:
            siblings.append((start, start + k))
            start, prior, width, whole = start + k, prior - k, width - k, False
    if not whole:
        siblings.append((start, start + width))
    siblings.reverse()
    return siblings


def nodes_for(ranges: Iterable[Range]) -> set[NodeId]:
    return {node for span in ranges for node in complete_subtrees(span)}


def record_of(node: NodeId) -> tuple[int, int]:
    """Where a complete subtree is stored: the leaf whose append completed it, and its offset there."""
    level, index = node
    return ((index + 1) << level) - 1, level * HASH_SIZE


# --- verification (RFC 9162 2.1.3.2 and 2.1.4.2) ------------------------------------------------------------

def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """The root that ``path`` leads to from ``leaf``, or None if the path cannot belong to (index, size)."""
    if not 0 <= index < size:
        return None
    fn, sn, node = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            node = node_hash(node, sibling)
        fn, sn = fn >> 1, sn >> 1
    return node if sn == 0 else None


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> bool:
    return root_from_inclusion(index, size, leaf, path) == root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       path: Sequence[bytes]) -> bool:
    if first == second:
        return not path and first_root == second_root
    if not 0 < first < second or not path:
        return False
    hashes = list(path)
    if first & (first - 1) == 0:  # the first tree is a complete left subtree: its root is the path's start
        hashes.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = hashes[0]
    for sibling in hashes[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(sibling, fr), node_hash(sibling, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_root and sr == second_root
