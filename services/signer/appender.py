"""Appends canonical events to their tenant's chain in PostgreSQL, with the Kafka offsets, in one transaction.

Two safeguards make a fork impossible even with two live signers on one partition (a zombie after a
rebalance): the partition's offsets row is locked and compared with the batch, so a batch another signer
already applied is skipped; and each chain head is locked ``FOR UPDATE`` while rows are appended.

Rows are chained in one of two ways, with the same result:
- ``append_batch`` reads the heads under lock, then hashes and signs inside the transaction;
- ``prepare`` hashes and signs ahead, from the heads this signer expects (its own previous batch), while
  that previous batch is still being written; ``append_prepared`` then locks the same rows and writes the
  batch only if the offsets and every head are exactly as expected. Anything else (another signer, an
  event already stored) rolls back and the batch goes through ``append_batch`` instead.

``append_batch`` looks up which of its events are already stored, under lock. ``prepare`` may leave that lookup
to the unique index on ``event_id`` while no such event is being met (``StoredDuplicates``): an event chained
twice can never be written, only cost a rolled-back transaction.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import operator
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import asyncpg
import orjson

from services.signer.rows import PURE_PYTHON_MEANT, ChainRow
from services.signer.signing import BatchSigner, InlineSigner
from shared.canonical import EVENT_COLUMNS, CanonicalEvent
from shared.chain import (
    CHECKED_SERIALISATION,
    DOMAIN_TAGS,
    GENESIS_HASH,
    HASH_VERSION,
    SALT_BYTES,
    canonical_bytes_v2,
    canonical_bytes_v2_checked,
    checkpoint_message,
    content_digest,
    plain_content_digest,
    row_hash,
)
from shared.enrollment import UnenrolledKey, describe_missing
from shared.keys import Signer
from shared.merkle import Frontier, append_leaf
from shared.proofs import RECORD_MASK, has_record
from shared.treehead import tree_head_message

# The signature last: a row's record is built when it is hashed, and its signature set when it comes back.
CHAIN_COLUMNS = (
    "chain_seq", "prev_hash", "row_hash", "signing_key_id", "hash_version", "content_digest", "signature"
)
# Rows are written as hash version 2: the row keeps the digest of its content, audit_content the content.
# The row's own content column is left to its default, the empty object.
_STORED_COLUMNS = tuple(column for column in EVENT_COLUMNS if column != "content")
INSERT_COLUMNS = (*_STORED_COLUMNS, *CHAIN_COLUMNS)
CONTENT_COLUMNS = ("tenant_id", "chain_seq", "salt", "content")
SUBTREE_COLUMNS = ("tenant_id", "leaf_index", "hashes")
_event_values = operator.itemgetter(*_STORED_COLUMNS)
_SEQUENCE_CLAIM = ("tenant_id", "session_id", "event_sequence")
_CONFLICT_KEY = operator.itemgetter(*(INSERT_COLUMNS.index(column) for column in _SEQUENCE_CLAIM))
_SESSION_OF = operator.itemgetter(0, 1)
_TENANT_OF = operator.attrgetter("tenant_id")
# Rows hashed between two turns of the event loop (about half a millisecond), each turn also handing their
# hashes to the signing helper: the COPY of the batch before is in flight meanwhile, and its socket and
# round trips only move when the loop turns. 16 measured best (8 to 64 tried with make bench-signer).
_CHUNK = 16


def _compiled_chain_plain() -> Callable[..., int] | None:
    """The compiled per-row path of ``chain_rows`` (``_native_chain.c``), set up with the definitions it
    follows; None where it was not built (no C compiler at install) or the switch says the Python path is
    meant: every row then takes the Python path."""
    if PURE_PYTHON_MEANT:
        return None
    try:
        from services.signer import _native_chain  # noqa: PLC0415 (optional: absent without a C compiler)
    except ImportError:
        return None
    checked = CHECKED_SERIALISATION
    _native_chain.configure(
        _STORED_COLUMNS, orjson.dumps, checked.option, checked.default, checked.content_option,
        orjson.JSONEncodeError, Decimal, checked.event_time_text, checked.received_at_text, hashlib.sha256,
        HASH_VERSION, DOMAIN_TAGS[HASH_VERSION], RECORD_MASK,
    )
    return _native_chain.chain_plain


_chain_plain = _compiled_chain_plain()


# The PostgreSQL type of each column the signer COPYs (shared/db/migrations; a test compares them with the
# migrated schema), as the compiled COPY encoder names it.
_COPY_KIND_OF_TYPE = {
    "text": "t", "bigint": "q", "integer": "i", "smallint": "h", "boolean": "b", "timestamptz": "T",
    "numeric": "n", "jsonb": "j", "bytea": "y",
}
COPY_COLUMN_TYPES: dict[str, str] = {
    **dict.fromkeys(
        ("event_id", "tenant_id", "org_id", "license_id", "plane", "event_type", "session_id", "correlation_id",
         "user_email", "user_id", "user_account_uuid", "claimed_org_id", "service_name", "service_version",
         "model", "decision", "decision_source", "tool_name", "batch_id", "signing_key_id"),
        "text",
    ),
    **dict.fromkeys(("event_time", "received_at"), "timestamptz"),
    **dict.fromkeys(
        ("event_sequence", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
         "tokens_used", "duration_ms", "chain_seq", "leaf_index"),
        "bigint",
    ),
    **dict.fromkeys(("claimed_org_mismatch", "success", "content_captured"), "boolean"),
    "cost": "numeric",
    **dict.fromkeys(("status_code", "attempt"), "integer"),
    **dict.fromkeys(("content_lengths", "redacted_fields", "attributes", "content"), "jsonb"),
    **dict.fromkeys(("prev_hash", "row_hash", "content_digest", "signature", "salt", "hashes"), "bytea"),
    "hash_version": "smallint",
}


def _compiled_copy() -> Callable[[bytes, Sequence[Sequence[Any]]], bytearray | None] | None:
    """The compiled binary COPY encoder (``_native_copy.c``), writing jsonb with the function the signer's
    connections encode it with (``shared.db.pool``: orjson.dumps); None where it was not built or the switch
    says the Python path is meant."""
    if PURE_PYTHON_MEANT:
        return None
    try:
        from services.signer import _native_copy  # noqa: PLC0415 (optional: absent without a C compiler)
    except ImportError:
        return None
    _native_copy.configure(orjson.dumps, Decimal, UTC)
    return _native_copy.encode


_encode_copy = _compiled_copy()


@functools.cache
def _copy_kinds(columns: tuple[str, ...]) -> bytes:
    return "".join(_COPY_KIND_OF_TYPE[COPY_COLUMN_TYPES[column]] for column in columns).encode()


async def copy_records(conn: asyncpg.Connection, table: str, records: Sequence[Sequence[Any]],
                       columns: Sequence[str]) -> None:
    """COPY ``records`` into ``table``: encoded in C where built and every value is one it writes exactly,
    else (and for the whole table) through asyncpg's ``copy_records_to_table``, as the signer always did."""
    if _encode_copy is not None:
        data = _encode_copy(_copy_kinds(tuple(columns)), records)
        if data is not None:
            # A memoryview: asyncpg would take bytes for a path.
            await conn.copy_to_table(table, source=memoryview(data), columns=list(columns), format="binary")
            return
    await conn.copy_records_to_table(table, records=records, columns=list(columns))


class OffsetEvent(NamedTuple):
    """``event`` is None for a message that was dead-lettered: its offset is consumed all the same."""

    offset: int
    event: ChainRow | CanonicalEvent | None


def _rows(items: Iterable[OffsetEvent]) -> list[ChainRow]:
    rows = []
    for item in items:
        event = item.event
        if isinstance(event, ChainRow):
            rows.append(event)
        elif event is not None:
            rows.append(ChainRow.of(event))
    return rows


@dataclass(frozen=True)
class CheckpointPolicy:
    """A signed checkpoint is written when a chain grew by ``every_rows`` or ``every`` has passed."""

    every_rows: int = 1_000
    every: timedelta = timedelta(seconds=60)


@dataclass
class Head:
    seq: int
    hash: bytes
    key_id: str | None
    checkpoint_seq: int
    checkpoint_at: datetime | None
    # The chain's Merkle tree (shared/merkle.py): its size is always ``seq``.
    tree: Frontier = field(default_factory=Frontier)


GENESIS = Head(0, GENESIS_HASH, None, 0, None)


@dataclass(frozen=True)
class AppendResult:
    appended: int
    duplicates: int
    stale: int
    next_offset: int
    heads: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    # False when the batch was chained under lock rather than as prepared: cached heads are then out of date.
    as_prepared: bool = False
    # Rows newly flagged sequence_conflict by this batch: (tenant, session, sequence, event id).
    conflicts: tuple[tuple[str, str, int, str], ...] = ()
    # Per partition, the offset after its last message, when the batch spans partitions (else empty).
    next_offsets: dict[int, int] = field(default_factory=dict)


class OffsetGap(Exception):
    """The batch starts after the stored offset: messages in between would be skipped. Seek back instead."""

    def __init__(self, stored: int) -> None:
        super().__init__(f"stored offset {stored} is behind the batch")
        self.stored = stored


class RetiredKey(Exception):
    """The configured signing key was retired after a rotation; signing with it would break verification."""


@dataclass
class Chained:
    """Rows ready for COPY once ``complete`` has collected their signatures, and what else the same
    transaction writes."""

    records: list[list[Any]] = field(default_factory=list)
    activations: list[tuple[str, int, str]] = field(default_factory=list)
    checkpoints: list[tuple[Any, ...]] = field(default_factory=list)
    # (tenant, leaf index, hashes of the subtrees completed by that leaf): merkle_subtrees rows, only for the
    # leaves completing a subtree of RECORD_LEVEL or above (shared/proofs.has_record), a quarter of them.
    # Readers hash the smaller subtrees from the rows' row_hash.
    subtrees: list[tuple[str, int, bytes]] = field(default_factory=list)
    # Per row: its record (``INSERT_COLUMNS``), whose signature (the last value) is set in complete().
    unsigned: list[list[Any]] = field(default_factory=list)
    # audit_content rows (tenant, chain_seq, salt, content), written in the same transaction as the rows.
    contents: list[tuple[str, int, bytes, Any]] = field(default_factory=list)
    signing: list[asyncio.Future[list[bytes]]] = field(default_factory=list)
    key_id: str = ""

    def sequence_claims(self) -> list[tuple[str, str, int]]:
        """The (tenant, session, sequence) place each row with a session and a sequence claims, signed or not."""
        claims = map(_CONFLICT_KEY, itertools.chain(self.records, self.unsigned))
        return [key for key in claims if key[1] is not None and key[2] is not None]

    @classmethod
    def merged(cls, parts: Sequence[Chained]) -> Chained:
        """One ``Chained`` writing ``parts`` in order, each chained on the heads the one before it left."""
        if len(parts) == 1:
            return parts[0]
        out = cls(key_id=parts[0].key_id)
        for part in parts:
            out.records += part.records
            out.activations += part.activations
            out.checkpoints += part.checkpoints
            out.subtrees += part.subtrees
            out.unsigned += part.unsigned
            out.contents += part.contents
            # complete() pairs the signatures with the unsigned rows in order: the parts' futures in part order.
            out.signing += part.signing
        return out

    async def complete(self) -> Chained:
        if self.unsigned:
            signatures = [signature for chunk in await asyncio.gather(*self.signing) for signature in chunk]
            for record, signature in zip(self.unsigned, signatures, strict=True):
                record[-1] = signature
            self.records.extend(self.unsigned)
            self.unsigned, self.signing = [], []
        return self


async def chain_rows(
    rows: Sequence[ChainRow],
    heads: dict[str, Head],
    signer: Signer,
    policy: CheckpointPolicy | None,
    now: datetime,
    batch_signer: BatchSigner | None = None,
) -> Chained:
    """Hash ``rows`` onto ``heads`` (which are advanced), yielding to the event loop between chunks.

    Hashing is sequential (each row links to the one before); the signatures of a chunk are handed to
    ``batch_signer`` as soon as its hashes are known, and ``Chained.complete`` collects them, so the next
    batch can be hashed while this one is still being signed.
    """
    batch_signer = batch_signer or InlineSigner(signer)
    key_id = signer.key_id
    out = Chained(key_id=key_id)
    activated = set()
    # Each chain's head while the batch is hashed, as a list [seq, hash, Merkle frontier hashes] that both
    # paths below read and advance in place; written back to the heads once the rows are in.
    states: dict[str, list[Any]] = {}
    for tenant in dict.fromkeys(map(_TENANT_OF, rows)):
        head = heads[tenant]
        if head.key_id != key_id:
            # This key signs the chain from this row on; older rows keep the key they were signed with.
            out.activations.append((tenant, head.seq + 1, key_id))
            activated.add(tenant)
        states[tenant] = [head.seq, head.hash, list(head.tree.hashes)]
    # The salts of the whole batch from one read of the system's random source.
    chaining = _Chaining(rows, os.urandom(SALT_BYTES * len(rows)), states, key_id, out)
    signing = out.signing
    first, total = 0, len(rows)
    while total - first >= _CHUNK:
        digests = chaining.run(first, first + _CHUNK)
        signing.append(asyncio.ensure_future(batch_signer.sign_many(digests)))
        first += _CHUNK
        await asyncio.sleep(0)
    signing.append(asyncio.ensure_future(batch_signer.sign_many(chaining.run(first, total))))
    for tenant, (seq, digest, stack) in states.items():
        head = heads[tenant]
        head.seq, head.hash, head.tree = seq, digest, Frontier(seq, tuple(stack))
    for tenant in activated:
        heads[tenant].key_id = key_id
    if policy is not None:
        out.checkpoints.extend(_due_checkpoints(sorted(states), heads, signer, policy, now))
    return out


class _Chaining:
    """One batch's hashing: each row onto its chain's state, its record, content and Merkle record into ``out``.

    Plain rows (most) go through the compiled path when it is built (``_native_chain.c``, the same steps);
    it stops at any row it leaves to the Python path below, which goes on from there."""

    def __init__(
        self, rows: Sequence[ChainRow], salts: bytes, states: dict[str, list[Any]], key_id: str, out: Chained
    ) -> None:
        # The compiled path indexes a list or a tuple.
        self.rows = rows if isinstance(rows, list | tuple) else list(rows)
        self.salts, self.states, self.key_id, self.out = salts, states, key_id, out

    def run(self, start: int, stop: int) -> list[bytes]:
        """Chains ``rows[start:stop]``; returns their row hashes."""
        out, index = self.out, start
        digests: list[bytes] = []
        while index < stop:
            if _chain_plain is not None:
                index = _chain_plain(self.rows, index, stop, self.salts, self.states, self.key_id, out.unsigned,
                                    out.contents, digests, out.subtrees)
                if index == stop:
                    break
            digests.append(self.chain_one(index))
            index += 1
        return digests

    def chain_one(self, index: int) -> bytes:
        """Chains ``rows[index]``; returns its row hash."""
        row, key_id, out = self.rows[index], self.key_id, self.out
        tenant = row.tenant_id
        state = self.states[tenant]
        values = row.values  # the hashed chain columns are set anew each time the row is chained
        seq, prev = state[0] + 1, state[1]
        values["chain_seq"] = seq
        values["signing_key_id"] = key_id
        values["hash_version"] = HASH_VERSION
        salt = self.salts[index * SALT_BYTES:(index + 1) * SALT_BYTES]
        content = values["content"]
        if row.plain:
            committed = plain_content_digest(salt, content)
            canonical = canonical_bytes_v2_checked(values, committed) or canonical_bytes_v2(values, committed)
        else:
            committed = content_digest(salt, content)
            canonical = canonical_bytes_v2(values, committed)
        digest = row_hash(prev, canonical, HASH_VERSION)
        out.unsigned.append([*_event_values(values), seq, prev, digest, key_id, HASH_VERSION, committed, None])
        out.contents.append((tenant, seq, salt, content))
        state[0], state[1] = seq, digest
        completed = append_leaf(state[2], seq - 1, digest)
        if has_record(seq - 1):
            out.subtrees.append((tenant, seq - 1, completed))
        return digest


def _due_checkpoints(
    tenants: Iterable[str], heads: dict[str, Head], signer: Signer, policy: CheckpointPolicy, now: datetime
) -> list[tuple[Any, ...]]:
    """Checkpoints of the chains ``policy`` says are due (their heads record them)."""
    due_rows = []
    for tenant in tenants:
        head = heads[tenant]
        grown = head.seq - head.checkpoint_seq
        due = head.checkpoint_at is None or now - head.checkpoint_at >= policy.every
        if grown >= policy.every_rows or (grown > 0 and due):
            due_rows.append(_checkpoint(signer, tenant, head, now))
            head.checkpoint_seq, head.checkpoint_at = head.seq, now
    return due_rows


def _checkpoint(signer: Signer, tenant: str, head: Head, now: datetime) -> tuple[Any, ...]:
    """A chain_checkpoints row: the signed checkpoint of ``head`` and the signed head of its Merkle tree."""
    message = checkpoint_message(tenant, head.seq, head.hash, now, signer.key_id)
    root = head.tree.root()
    tree_message = tree_head_message(tenant, head.tree.size, root, now, signer.key_id)
    return (tenant, head.seq, head.hash, now, signer.key_id, signer.sign(message), root, signer.sign(tree_message))


_INSERT_CHECKPOINT = (
    "INSERT INTO chain_checkpoints (tenant_id, chain_seq, head_hash, created_at, key_id, signature, tree_root,"
    " tree_signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
)


async def require_enrolled_key(
    conn: asyncpg.Connection, signer: Signer, pinned: Mapping[str, bytes] | None = None
) -> None:
    """Refuse a key no operator enrolled (``auditctl keys enroll``): absent from ``signing_keys`` or, with a
    witness, from its pinned keys. The signer never registers a key of its own."""
    row = await conn.fetchrow("SELECT public_key, valid_until FROM signing_keys WHERE key_id = $1", signer.key_id)
    if row is None or bytes(row["public_key"]) != signer.public_key:
        raise UnenrolledKey(describe_missing(signer.key_id, "not in the database"))
    if row["valid_until"] is not None:
        raise RetiredKey(f"signing key {signer.key_id} was retired at {row['valid_until'].isoformat()}")
    if pinned is not None and pinned.get(signer.key_id) != signer.public_key:
        raise UnenrolledKey(describe_missing(signer.key_id, "not pinned in the witness", pinned))


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


_LOCK_OFFSETS = (
    "SELECT partition, next_offset FROM signer_offsets WHERE consumer_group = $1 AND topic = $2"
    " AND partition = ANY($3::integer[]) ORDER BY partition FOR UPDATE"
)


async def _lock_offsets(conn: asyncpg.Connection, group: str, topic: str, firsts: Mapping[int, int]) -> dict[int, int]:
    """Lock the offsets rows of the partitions in ``firsts`` (by partition, so two signers cannot deadlock),
    creating those missing at their first offset; returns each partition's stored next offset."""
    partitions = sorted(firsts)
    stored = {row["partition"]: row["next_offset"] for row in await conn.fetch(_LOCK_OFFSETS, group, topic, partitions)}
    missing = [partition for partition in partitions if partition not in stored]
    if missing:
        await conn.execute(
            "INSERT INTO signer_offsets (consumer_group, topic, partition, next_offset)"
            " SELECT $1, $2, p, o FROM unnest($3::integer[], $4::bigint[]) AS v(p, o) ON CONFLICT DO NOTHING",
            group, topic, missing, [firsts[partition] for partition in missing],
        )
        rows = await conn.fetch(_LOCK_OFFSETS, group, topic, partitions)
        stored = {row["partition"]: row["next_offset"] for row in rows}
    return stored


# After an event already stored is met, how many batches in a row ``prepare`` must find none stored before it
# stops looking them up (StoredDuplicates). Not looking costs, when a batch does hold one, the batch's
# hashing and signing, its COPY up to that row and a rollback, and then the batches prepared behind it are
# hashed and signed again: 30 to 60 us per row of the batch (docs/operations/sizing.md), against 1.5 to 3 us
# per row for the lookup (about 0.5 in the signer, 1 to 2 in the database). Looking up for as many clean
# batches as one such miss costs (10 to 40), and only then taking the risk again, is never worse than twice
# the best choice made knowing where the duplicates are (a rent-or-buy bound). 32, toward the top of that
# range: a miss also stalls the pipeline (its batches are chained under lock, signed inline), which those
# CPU figures leave out, and a lookup too many costs little.
STORED_CHECK_BATCHES = 32


class StoredDuplicates:
    """Whether ``prepare`` looks up which of a batch's events are already stored, adapting to what it meets.

    Events already chained reach the signer only when something sends them again (the redactor redelivering
    after a crash, a client's retry, a replay): in nearly every batch there are none, and the lookup only costs.
    Without it, such an event is chained again in the prepared batch, whose COPY the unique index on
    ``event_id`` then refuses: the transaction rolls back and its batches are chained under lock
    (``append_batch``), which looks them up, skips and counts them. That is dear, and duplicates come in runs
    (a redelivery, a replay of a whole topic), so once one is met the lookup is made again for every batch
    until ``batches`` in a row found none stored. Nothing is ever written twice either way: only the cost
    changes. Starts without the lookup: a signer's own restart or rebalance sends nothing again (its offsets
    are committed with its rows), and the first duplicate met brings the lookup back.
    """

    def __init__(self, batches: int = STORED_CHECK_BATCHES) -> None:
        self.batches = batches
        self._left = 0  # batches still to be looked up; none: prepare leaves it to the unique index

    @property
    def look_up(self) -> bool:
        return self._left > 0

    def met(self) -> None:
        """An event already stored was met: found by a lookup, or refused by the unique index."""
        self._left = self.batches

    def looked_up(self, found: bool) -> None:
        """A batch was looked up; ``found``: whether one of its events was already stored."""
        if found:
            self._left = self.batches
        elif self._left:
            self._left -= 1


def _new_rows(rows: Sequence[ChainRow], *excluded: Collection[str]) -> list[ChainRow]:
    """``rows`` without events in any of ``excluded`` (already chained, or being written), and without repeats
    within the batch."""
    ids = [row.event_id for row in rows]
    unique = set(ids)
    # The usual batch, with no repeat and nothing excluded, is told apart with a set operation per collection
    # instead of a copy of the (larger) collections of ids being written and a membership test per row.
    if len(unique) == len(ids) and all(unique.isdisjoint(ids_of) for ids_of in excluded):
        return list(rows)
    seen: set[str] = set()
    seen.update(*excluded)
    fresh = []
    for row in rows:
        if row.event_id not in seen:
            seen.add(row.event_id)
            fresh.append(row)
    return fresh


# One index probe per event id, whatever the batch size. Asked as ``event_id = ANY($1)``, a batch of a thousand
# ids or more was answered by reading all of audit_logs while the table was young (a few hundred thousand
# rows): the planner, counting a probe per id against one pass over the table, chose the pass. A LIMIT inside
# LATERAL keeps the probes: that subquery cannot be turned into a join.
_EXISTING_EVENT_IDS = """
SELECT k.event_id
FROM unnest($1::text[]) AS k(event_id)
CROSS JOIN LATERAL (SELECT 1 FROM audit_logs a WHERE a.event_id = k.event_id LIMIT 1) AS stored
"""


async def _existing_event_ids(conn: asyncpg.Connection, rows: Sequence[ChainRow]) -> set[str]:
    found = await conn.fetch(_EXISTING_EVENT_IDS, [row.event_id for row in rows])
    return {record["event_id"] for record in found}


async def _read_heads(conn: asyncpg.Connection, tenants: Sequence[str], *, lock: bool) -> dict[str, Head]:
    query = (
        "SELECT tenant_id, head_seq, head_hash, key_id, checkpoint_seq, checkpoint_at, merkle_frontier"
        " FROM chain_heads WHERE tenant_id = ANY($1::text[]) ORDER BY tenant_id"
    )
    rows = await conn.fetch(query + (" FOR UPDATE" if lock else ""), tenants)
    heads = {tenant: replace(GENESIS) for tenant in tenants}
    for row in rows:
        heads[row["tenant_id"]] = Head(
            row["head_seq"], bytes(row["head_hash"]), row["key_id"], row["checkpoint_seq"], row["checkpoint_at"],
            Frontier.from_bytes(row["head_seq"], bytes(row["merkle_frontier"])),
        )
    return heads


async def _lock_heads(conn: asyncpg.Connection, tenants: Sequence[str], *, may_be_new: bool = True) -> dict[str, Head]:
    """Lock the heads of ``tenants``; ``may_be_new`` creates the rows of chains that have none yet."""
    if may_be_new:
        await conn.execute(
            "INSERT INTO chain_heads (tenant_id, head_seq, head_hash) SELECT t, 0, $2 FROM unnest($1::text[]) t"
            " ON CONFLICT (tenant_id) DO NOTHING",
            tenants,
            GENESIS_HASH,
        )
    # Lock order is by tenant id, so two signers holding different tenants cannot deadlock.
    return await _read_heads(conn, tenants, lock=True)


# Every row of a tenant's session that shares a sequence number with another, among the sessions and sequences
# just appended: all of them are flagged, the rows chained earlier as well as the new ones.
_FLAG_SEQUENCE_CONFLICTS = """
WITH appended AS (
    SELECT DISTINCT tenant_id, session_id, event_sequence
    FROM unnest($1::text[], $2::text[], $3::bigint[]) AS k(tenant_id, session_id, event_sequence)
), conflicted AS (
    SELECT a.tenant_id, a.session_id, a.event_sequence
    FROM audit_logs a JOIN appended USING (tenant_id, session_id, event_sequence)
    GROUP BY a.tenant_id, a.session_id, a.event_sequence
    HAVING count(*) > 1
)
UPDATE audit_logs a SET sequence_conflict = true
FROM conflicted c
WHERE a.tenant_id = c.tenant_id AND a.session_id = c.session_id AND a.event_sequence = c.event_sequence
  AND a.event_sequence IS NOT NULL AND NOT a.sequence_conflict
RETURNING a.tenant_id, a.session_id, a.event_sequence, a.event_id
"""


# The sessions and sequences of a batch already taken by a stored row. Asked before the batch is written, so
# that an index probe for a place nobody holds yet (nearly all of them) ends in the index; asked after, each
# probe would find the new row and read it from the table.
# An index probe per place, kept by a LIMIT inside LATERAL as in _EXISTING_EVENT_IDS (as a join, a large batch
# on a young table was answered by reading all of audit_logs).
_TAKEN_SEQUENCES = """
SELECT k.tenant_id, k.session_id, k.event_sequence
FROM (
    SELECT DISTINCT tenant_id, session_id, event_sequence
    FROM unnest($1::text[], $2::text[], $3::bigint[]) AS k(tenant_id, session_id, event_sequence)
) AS k
CROSS JOIN LATERAL (
    SELECT 1 FROM audit_logs a
    WHERE a.tenant_id = k.tenant_id AND a.session_id = k.session_id AND a.event_sequence = k.event_sequence
    LIMIT 1
) AS taken
"""


# Every stored (session, sequence) claim of the given sessions. A probe per session through the session index:
# OFFSET 0 keeps the LATERAL subquery from being flattened into a join the planner might answer with one pass
# over audit_logs (as _EXISTING_EVENT_IDS explains).
_SESSION_SEQUENCES = """
SELECT k.tenant_id, k.session_id, stored.event_sequence
FROM unnest($1::text[], $2::text[]) AS k(tenant_id, session_id)
CROSS JOIN LATERAL (
    SELECT a.event_sequence FROM audit_logs a
    WHERE a.tenant_id = k.tenant_id AND a.session_id = k.session_id AND a.event_sequence IS NOT NULL
    OFFSET 0
) AS stored
"""


class SequenceClaims:
    """The (session, sequence) places the stored rows of a tenant claim, remembered per session, so that the
    taken-sequence check of a batch asks the database only about sessions it has not seen.

    Exact because a tenant's rows are appended only by whoever holds its chain head, under lock, and never
    change or go away: what is remembered of a tenant holds for one chain head (its seq and hash). A batch
    whose locked head is another one (another signer appended meanwhile, or this one's transaction failed)
    forgets the tenant and reads its sessions again. A session not remembered (never seen, or forgotten when
    the memory outgrew ``max_sessions`` or ``max_claims``: all of it is dropped then) is read from the
    database; a remembered one always holds every claim of the tenant's rows up to that head. Claims are kept
    as the (tenant, session, sequence) keys a batch has, so that a batch is answered by one set intersection.
    """

    def __init__(self, max_sessions: int = 16_384, max_claims: int = 131_072) -> None:
        self.max_sessions = max_sessions
        self.max_claims = max_claims
        # tenant -> (head seq, head hash): the head the tenant's remembered sessions hold for.
        self._heads: dict[str, tuple[int, bytes]] = {}
        self._sessions: set[tuple[str, str]] = set()
        self._claims: set[tuple[str, str, int]] = set()

    def _forget(self, tenant: str) -> None:
        self._sessions = {key for key in self._sessions if key[0] != tenant}
        self._claims = {key for key in self._claims if key[0] != tenant}

    async def taken(
        self, conn: asyncpg.Connection, keys: set[tuple[str, str, int]], heads: Mapping[str, tuple[int, bytes]]
    ) -> set[tuple[str, str, int]]:
        """Which of ``keys`` a stored row already claims; ``heads`` are the chain heads locked by the caller's
        transaction, one for every tenant of ``keys``."""
        for tenant, head in heads.items():
            known = self._heads.get(tenant)
            if known != head:
                if known is not None:
                    self._forget(tenant)
                self._heads[tenant] = head
        missing = set(map(_SESSION_OF, keys)) - self._sessions
        if missing:
            tenants, names = (list(column) for column in zip(*missing, strict=True))
            stored = await conn.fetch(_SESSION_SEQUENCES, tenants, names)
            self._claims.update((row["tenant_id"], row["session_id"], row["event_sequence"]) for row in stored)
            self._sessions |= missing
        return keys & self._claims

    def committed(
        self,
        claims: Iterable[tuple[str, str, int]],
        before: Mapping[str, tuple[int, bytes]],
        after: Mapping[str, tuple[int, bytes]],
    ) -> None:
        """The transaction that moved the heads from ``before`` to ``after`` (locked throughout), writing rows
        with ``claims``, committed: the tenants' memory now holds for ``after``."""
        moved = set()
        for tenant, head in before.items():
            if self._heads.get(tenant) == head:  # else not remembered for that head: nothing to carry over
                self._heads[tenant] = after[tenant]
                moved.add(tenant)
        if len(moved) == len(before):
            self._claims.update(claims)
        else:
            self._claims.update(key for key in claims if key[0] in moved)
        if len(self._sessions) > self.max_sessions or len(self._claims) > self.max_claims:
            self._sessions, self._claims = set(), set()


async def _contested_sequences(
    conn: asyncpg.Connection,
    claimed: Sequence[tuple[str, str, int]],
    memory: SequenceClaims | None = None,
    heads: Mapping[str, tuple[int, bytes]] | None = None,
) -> set[tuple[str, str, int]]:
    """The (tenant, session, sequence) places that more than one row will claim once rows ``claimed`` (their
    ``Chained.sequence_claims``) are written: those claimed twice among them, and those a stored row already
    holds. Asked before the write.

    With ``memory`` (and ``heads``, the heads the transaction locked), stored claims come from the sessions it
    remembers; else every place is looked up."""
    keys = set(claimed)
    contested = set() if len(keys) == len(claimed) else {k for k, n in Counter(claimed).items() if n > 1}
    if keys and memory is not None and heads is not None:
        contested.update(await memory.taken(conn, keys, heads))
    elif keys:
        tenants, sessions, sequences = (list(column) for column in zip(*keys, strict=True))
        taken = await conn.fetch(_TAKEN_SEQUENCES, tenants, sessions, sequences)
        contested.update((row["tenant_id"], row["session_id"], row["event_sequence"]) for row in taken)
    return contested


async def _flag_sequence_conflicts(
    conn: asyncpg.Connection, keys: Collection[tuple[str, str, int]]
) -> tuple[tuple[str, str, int, str], ...]:
    """Flags the rows whose session and sequence another event of the tenant claims too; nothing is dropped."""
    if not keys:
        return ()
    tenants, sessions, sequences = (list(column) for column in zip(*keys, strict=True))
    flagged = await conn.fetch(_FLAG_SEQUENCE_CONFLICTS, tenants, sessions, sequences)
    return tuple(
        (row["tenant_id"], row["session_id"], row["event_sequence"], row["event_id"]) for row in flagged
    )


# Every chain head a batch grew, in one statement.
_UPDATE_HEADS = """
UPDATE chain_heads h SET head_seq = v.head_seq, head_hash = v.head_hash, key_id = v.key_id,
    checkpoint_seq = GREATEST(h.checkpoint_seq, v.checkpoint_seq),
    checkpoint_at = GREATEST(h.checkpoint_at, v.checkpoint_at),
    merkle_frontier = v.merkle_frontier, updated_at = now()
FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::text[], $5::bigint[], $6::timestamptz[], $7::bytea[])
    AS v(tenant_id, head_seq, head_hash, key_id, checkpoint_seq, checkpoint_at, merkle_frontier)
WHERE h.tenant_id = v.tenant_id
"""
# The next offset of every partition a batch read, in one statement.
_UPDATE_OFFSETS = """
UPDATE signer_offsets o SET next_offset = v.next_offset, updated_at = now()
FROM unnest($3::integer[], $4::bigint[]) AS v(partition, next_offset)
WHERE o.consumer_group = $1 AND o.topic = $2 AND o.partition = v.partition
"""


async def _write(
    conn: asyncpg.Connection,
    chained: Chained,
    heads: dict[str, Head],
    offsets: tuple[str, str, Mapping[int, int]],
    claimed: Sequence[tuple[str, str, int]] = (),
    memory: tuple[SequenceClaims, Mapping[str, tuple[int, bytes]]] | None = None,
) -> tuple[tuple[str, str, int, str], ...]:
    """Everything one batch writes, after its offsets row and heads are locked; returns the rows it flagged
    ``sequence_conflict``. ``claimed``: the batch's ``Chained.sequence_claims``; ``memory``: the signer's
    ``SequenceClaims`` and the heads as locked, before the batch."""
    if chained.activations:
        await conn.executemany(
            "INSERT INTO key_activations (tenant_id, from_seq, key_id) VALUES ($1, $2, $3)", chained.activations
        )
    conflicts: tuple[tuple[str, str, int, str], ...] = ()
    # What needs no signature goes first, while the signing helper may still be signing the batch's last rows.
    contested = (
        await _contested_sequences(conn, claimed, *(memory or (None, None))) if claimed else set()
    )
    if chained.contents:
        await copy_records(conn, "audit_content", chained.contents, CONTENT_COLUMNS)
    if chained.subtrees:
        await copy_records(conn, "merkle_subtrees", chained.subtrees, SUBTREE_COLUMNS)
    await chained.complete()
    if chained.records:
        await copy_records(conn, "audit_logs", chained.records, INSERT_COLUMNS)
        conflicts = await _flag_sequence_conflicts(conn, contested)
    if chained.checkpoints:
        await conn.executemany(_INSERT_CHECKPOINT, chained.checkpoints)
    if heads:
        # GREATEST: the quiet-chain checkpointer may have checkpointed this head since it was read.
        tenants = list(heads)
        await conn.execute(
            _UPDATE_HEADS,
            tenants,
            [heads[t].seq for t in tenants],
            [heads[t].hash for t in tenants],
            [heads[t].key_id for t in tenants],
            [heads[t].checkpoint_seq for t in tenants],
            [heads[t].checkpoint_at for t in tenants],
            [heads[t].tree.to_bytes() for t in tenants],
        )
    group, topic, next_offsets = offsets
    partitions = sorted(next_offsets)
    await conn.execute(_UPDATE_OFFSETS, group, topic, partitions, [next_offsets[p] for p in partitions])
    return conflicts


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
    claims: SequenceClaims | None = None,
    stored_duplicates: StoredDuplicates | None = None,
) -> AppendResult:
    """``batch`` holds consecutive messages of one partition, in offset order. ``claims``: this signer's memory
    of the sequences its tenants' rows claim, used and kept up to date; ``stored_duplicates`` is told when an
    event of the batch was already stored."""
    assert batch, "empty batch"
    async with conn.transaction():
        stored = await _lock_offset(conn, group, topic, partition, batch[0].offset)
        if stored > batch[-1].offset:
            return AppendResult(0, 0, len(batch), stored)
        if stored < batch[0].offset:
            raise OffsetGap(stored)
        fresh = _rows(item for item in batch if item.offset >= stored)
        stale = sum(1 for item in batch if item.offset < stored)
        existing = await _existing_event_ids(conn, fresh)
        if existing and stored_duplicates is not None:
            stored_duplicates.met()
        to_append = _new_rows(fresh, existing)
        heads: dict[str, Head] = {}
        locked: dict[str, tuple[int, bytes]] = {}
        chained = Chained()
        if to_append:
            heads = await _lock_heads(conn, sorted({row.tenant_id for row in to_append}))
            locked = {tenant: (head.seq, head.hash) for tenant, head in heads.items()}
            chained = await chain_rows(to_append, heads, signer, checkpoints, now or datetime.now(UTC))
            await chained.complete()
        next_offset = batch[-1].offset + 1
        claimed = chained.sequence_claims()
        memory = None if claims is None else (claims, locked)
        conflicts = await _write(conn, chained, heads, (group, topic, {partition: next_offset}), claimed, memory)
    if claims is not None and locked:
        claims.committed(claimed, locked, {t: (h.seq, h.hash) for t, h in heads.items()})
    return AppendResult(
        len(to_append),
        len(fresh) - len(to_append),
        stale,
        next_offset,
        {t: h.seq for t, h in heads.items()},
        len(chained.checkpoints),
        conflicts=conflicts,
    )


@dataclass
class PreparedBatch:
    """A batch hashed and signed ahead of its transaction, valid only if the chain is where it was expected."""

    batch: Sequence[OffsetEvent]
    expected: dict[str, tuple[int, bytes]]
    heads: dict[str, Head]
    chained: Chained
    duplicates: int
    event_ids: frozenset[str]


async def prepare(
    conn: asyncpg.Connection,
    signer: Signer,
    batch: Sequence[OffsetEvent],
    head_state: dict[str, Head],
    *,
    in_flight: Collection[str] = (),
    pending: Collection[str] = (),
    checkpoints: CheckpointPolicy | None = None,
    now: datetime | None = None,
    batch_signer: BatchSigner | None = None,
    stored_duplicates: StoredDuplicates | None = None,
) -> PreparedBatch:
    """Chain ``batch`` onto ``head_state`` (read without locks where missing, then advanced to the batch's end).

    ``in_flight`` holds the event ids of the batch still being written, which the database does not show yet,
    and ``pending`` those of batches prepared since, not yet written (two collections, so that neither is copied).
    Events already stored are looked up and skipped, unless ``stored_duplicates`` says not to look: an event already
    stored is then chained with the others, and the write of the batch refuses it (``append_prepared_together``
    returns None). Repeats within the batch and events in flight are skipped either way.
    """
    assert batch, "empty batch"
    rows = _rows(batch)
    existing: set[str] = set()
    if rows and (stored_duplicates is None or stored_duplicates.look_up):
        existing = await _existing_event_ids(conn, rows)
        if stored_duplicates is not None:
            # Ids the append in flight committed meanwhile are this signer's own, not a redelivery.
            stored_duplicates.looked_up(bool(existing.difference(in_flight)))
    to_append = _new_rows(rows, existing, in_flight, pending)
    tenants = sorted({row.tenant_id for row in to_append})
    # Chained on copies: the caller may drop its head state while this runs (a batch before it fell back).
    heads = {tenant: replace(head_state[tenant]) for tenant in tenants if tenant in head_state}
    unknown = [tenant for tenant in tenants if tenant not in heads]
    if unknown:
        heads.update(await _read_heads(conn, unknown, lock=False))
    expected = {tenant: (head.seq, head.hash) for tenant, head in heads.items()}
    chained = await chain_rows(to_append, heads, signer, checkpoints, now or datetime.now(UTC), batch_signer)
    head_state.update((tenant, replace(head)) for tenant, head in heads.items())
    return PreparedBatch(
        batch, expected, heads, chained, len(rows) - len(to_append), frozenset(row.event_id for row in to_append)
    )


class _NotAsPrepared(Exception):
    """The offsets or a chain head moved since the batch was prepared; it must be chained under lock."""


async def append_prepared(
    conn: asyncpg.Connection,
    signer: Signer,
    prepared: PreparedBatch,
    *,
    group: str,
    topic: str,
    partition: int,
    checkpoints: CheckpointPolicy | None = None,
    claims: SequenceClaims | None = None,
) -> AppendResult:
    """Write a prepared batch if nothing moved since it was prepared, else chain it under lock."""
    result = await append_prepared_together(conn, [(partition, prepared)], group=group, topic=topic, claims=claims)
    if result is not None:
        return result
    return await append_batch(
        conn, signer, group=group, topic=topic, partition=partition, batch=prepared.batch, checkpoints=checkpoints,
        claims=claims,
    )


async def append_prepared_together(
    conn: asyncpg.Connection,
    parts: Sequence[tuple[int, PreparedBatch]],
    *,
    group: str,
    topic: str,
    claims: SequenceClaims | None = None,
    stored_duplicates: StoredDuplicates | None = None,
) -> AppendResult | None:
    """Write prepared batches, of one partition or several, in one transaction, if nothing moved since they
    were prepared; None (nothing written) when something did: each partition's batches must then be chained
    under lock (``append_batch``). ``claims`` and ``stored_duplicates`` as in ``append_batch``.

    ``parts`` are (partition, batch) in the order they were prepared, each batch chained on the heads the one
    before it left; the batches of one partition follow each other in offset order.
    """
    firsts: dict[int, int] = {}
    next_offsets: dict[int, int] = {}
    expected: dict[str, tuple[int, bytes]] = {}
    heads: dict[str, Head] = {}
    for partition, prepared in parts:
        if partition in next_offsets and next_offsets[partition] != prepared.batch[0].offset:
            return None  # not consecutive: only the locked path may decide what the gap means
        firsts.setdefault(partition, prepared.batch[0].offset)
        next_offsets[partition] = prepared.batch[-1].offset + 1
        for tenant, position in prepared.expected.items():
            expected.setdefault(tenant, position)
        heads.update(prepared.heads)
    chained = Chained.merged([prepared.chained for _, prepared in parts])
    claimed = chained.sequence_claims()
    # The signatures are collected inside the transaction, once the rows that need none are written
    # (_write): the locks it then holds are this signer's own chain heads and offsets, which only a zombie
    # signer or the quiet-chain checkpointer (which skips locked heads) would ask for.
    try:
        async with conn.transaction():
            stored = await _lock_offsets(conn, group, topic, firsts)
            if stored != firsts:
                raise _NotAsPrepared
            if expected:
                # A head expected past 0 was read from its row, which is never deleted: no insert needed.
                new_chain = any(seq == 0 for seq, _ in expected.values())
                locked = await _lock_heads(conn, sorted(expected), may_be_new=new_chain)
                if any((locked[t].seq, locked[t].hash) != expected[t] for t in expected):
                    raise _NotAsPrepared
            memory = None if claims is None else (claims, expected)
            conflicts = await _write(conn, chained, heads, (group, topic, next_offsets), claimed, memory)
    except _NotAsPrepared:
        return None
    except asyncpg.UniqueViolationError:
        # An event already stored (prepared without the lookup, or stored since the lookup), or a chain
        # position taken meanwhile: the locked path sorts out which, and skips and counts the duplicates.
        if stored_duplicates is not None:
            stored_duplicates.met()
        return None
    if claims is not None and expected:
        claims.committed(claimed, expected, {t: (h.seq, h.hash) for t, h in heads.items()})
    return AppendResult(
        len(chained.records),
        sum(prepared.duplicates for _, prepared in parts),
        0,
        max(next_offsets.values()),
        {t: h.seq for t, h in heads.items()},
        len(chained.checkpoints),
        as_prepared=True,
        conflicts=conflicts,
        next_offsets=next_offsets,
    )


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
            "SELECT tenant_id, head_seq, head_hash, merkle_frontier FROM chain_heads"
            " WHERE head_seq > checkpoint_seq AND (checkpoint_at IS NULL OR checkpoint_at <= $1)"
            " ORDER BY tenant_id FOR UPDATE SKIP LOCKED",
            now - policy.every,
        )
        for row in due:
            seq = row["head_seq"]
            head = Head(seq, bytes(row["head_hash"]), signer.key_id, seq, now,
                        Frontier.from_bytes(seq, bytes(row["merkle_frontier"])))
            await conn.execute(_INSERT_CHECKPOINT, *_checkpoint(signer, row["tenant_id"], head, now))
            await conn.execute(
                "UPDATE chain_heads SET checkpoint_seq = $2, checkpoint_at = $3 WHERE tenant_id = $1",
                row["tenant_id"],
                row["head_seq"],
                now,
            )
            written += 1
    return written
