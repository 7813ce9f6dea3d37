"""Recomputes every chain from the rows alone and checks every signature against the published keys.

A chain is checked in ranges of sequence numbers, each range by its own process with its own database
connection, so the expensive parts (canonical bytes, SHA-256, Ed25519) use every core. Each range also
reads the row before it (to check its first link) and the row after it (to tell an inserted row from a
modified one), so ranges need no stitching. A range whose rows, or whose row before, are missing is a break
of its own: every row from 1 to the end is linked to its predecessor wherever the range edges fall.

Kinds of break, named at the first sequence number where the chain stops holding:
- ``deleted``: a sequence number is missing, or a row's predecessor is gone and later rows were renumbered;
- ``inserted``: a row that the chain skips over (its successor links to the row before it);
- ``reordered``: rows that link to each other in the wrong order;
- ``modified``: a row whose contents no longer match its hash;
- ``bad_signature``: an invalid signature, an untrusted key, or a key used outside its published window;
- ``truncated``: rows missing at the end (against the chain head or a witnessed checkpoint);
- ``head_mismatch``: the chain head disagrees with the rows (rows continue past it: it was rewound);
- ``unrecorded_erasure``: a hash version 2 row whose content is gone, but no later erasure event of the
  chain lists it (content removed behind the pipeline's back).

A version 2 row whose content is present must match its ``content_digest`` (else ``modified``); one whose
content was erased through ``auditctl erase`` is counted in ``TenantReport.erased``.

The first break in sequence order is reported; docs/auditing.md gives the precedence at one sequence number.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import gc
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from shared import exactjson
from shared.chain import (
    DOMAIN_TAGS,
    GENESIS_HASH,
    HASH_VERSION_ERASABLE,
    HASH_VERSION_PLAIN,
    HASHED_COLUMNS_V2,
    canonical_bytes,
    canonical_bytes_v2,
    checkpoint_message,
    content_digest,
    format_cost,
    format_timestamp,
    json_is_plain,
    row_hash,
)
from shared.erasure import ERASURE_EVENT_TYPE, ERASURE_PLANE, erased_sequences
from shared.keys import key_id_for, verify_signature
from shared.witness import checkpoint_record

# JSONB columns are read as their text: decoding each value through the connection's Python codec costs more
# than all the rest of a row. The fast path turns each text into canonical bytes itself (the metadata columns
# repeat from row to row, so mostly by a lookup); any other use decodes them exactly as the codec does.
_JSON_COLUMNS = ("content", "content_lengths", "redacted_fields", "attributes")
# The members of a version 2 row's hashed object first, in canonical (sorted) order: the fast path reads them
# by position into a dict that orjson then writes in that order, without sorting each row's keys. Then what
# the checks add: the links, the signature, and the content (in the row for version 1; kept apart for version
# 2, with its salt, both NULL once erased).
_CANONICAL_ORDER_V2 = tuple(sorted(HASHED_COLUMNS_V2))
ROW_COLUMNS = (*_CANONICAL_ORDER_V2, "prev_hash", "row_hash", "signature", "content")
_SELECT_RANGE = (
    "SELECT "  # noqa: S608 - fixed column names
    + ", ".join(f"a.{c}::text AS {c}" if c in _JSON_COLUMNS else f"a.{c}" for c in ROW_COLUMNS)
    + ", c.salt AS content_salt, c.content::text AS erasable_content"
    " FROM audit_logs a LEFT JOIN audit_content c ON c.tenant_id = a.tenant_id AND c.chain_seq = a.chain_seq"
    # The range again on audit_content: the planner carries the tenant over to it but not the bounds, and
    # would otherwise read every content row of the tenant for each range.
    " AND c.chain_seq >= $2 AND c.chain_seq <= $3"
    " WHERE a.tenant_id = $1 AND a.chain_seq >= $2 AND a.chain_seq <= $3 ORDER BY a.chain_seq"
)
_DECODED_COLUMNS = frozenset((*_JSON_COLUMNS, "erasable_content"))
_KNOWN_VERSIONS = (HASH_VERSION_PLAIN, HASH_VERSION_ERASABLE)
RANGE_ROWS = 5_000
# A range and the row on each side of it in one query.
_PAGE = RANGE_ROWS + 2


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
    checkpoints_checked: int = 0
    # Version 2 rows whose content was erased, each listed by a signed erasure event.
    erased: int = 0
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks


@dataclass(frozen=True)
class KeyBook:
    """Published public keys, and which key signs each tenant's chain from which sequence number on."""

    keys: Mapping[str, bytes]
    activations: Mapping[str, Sequence[tuple[int, str]]]
    # Read from the database, not from an auditor's saved export: it may be re-read to stay current.
    from_database: bool = False
    # The keys are the pinned ones (the witness's trusted-keys file), whatever the database says.
    pinned: bool = False

    def active_key(self, tenant: str, seq: int) -> str | None:
        active = None
        for from_seq, key_id in self.activations.get(tenant, ()):
            if from_seq > seq:
                break
            active = key_id
        return active


_CHECKPOINT_FIELDS = ("tenant_id", "chain_seq", "head_hash", "created_at", "key_id", "signature")


@dataclass(frozen=True)
class Checkpoint:
    """A signed checkpoint, as the witness, ``auditctl checkpoints export`` and the table hold it. ``extra``
    keeps the members this version does not interpret (columns added to chain_checkpoints later)."""

    tenant_id: str
    chain_seq: int
    head_hash: bytes
    created_at: datetime
    key_id: str
    signature: bytes
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def to_record(self) -> dict[str, Any]:
        return {
            **self.extra,
            "tenant_id": self.tenant_id,
            "chain_seq": self.chain_seq,
            "head_hash": self.head_hash.hex(),
            "created_at": format_timestamp(self.created_at),
            "key_id": self.key_id,
            "signature": self.signature.hex(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_record(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Checkpoint:
        return cls(
            str(data["tenant_id"]),
            int(data["chain_seq"]),
            bytes.fromhex(str(data["head_hash"])),
            datetime.fromisoformat(str(data["created_at"])),
            str(data["key_id"]),
            bytes.fromhex(str(data["signature"])),
            {k: v for k, v in data.items() if k not in _CHECKPOINT_FIELDS},
        )

    @classmethod
    def from_json(cls, line: str) -> Checkpoint:
        return cls.from_record(json.loads(line))


# What computing a row's canonical bytes raises for values no signed row can hold.
_UNCANONICAL = (ValueError, TypeError, ArithmeticError)


@dataclass(frozen=True)
class RangeResult:
    first_seq: int
    last_seq: int
    rows: int
    brk: Break | None
    # Of the rows that hold (before ``brk``): version 2 rows without content, and erasure events with the
    # sequence numbers they list. Matched against each other once every range is checked.
    erased: tuple[int, ...] = ()
    erasures: tuple[tuple[int, tuple[int, ...]], ...] = ()


class _ContentMismatch(ValueError):
    """A version 2 row's stored content does not give its content_digest."""


def _row_digest(row: Mapping[str, Any], stored_prev: bytes) -> bytes:
    """The row hash recomputed from the row's own columns (for version 2, from its stored content_digest)."""
    version = row["hash_version"]
    if version == HASH_VERSION_PLAIN:
        return row_hash(stored_prev, canonical_bytes(row))
    committed = row["content_digest"]
    if committed is None:
        raise _ContentMismatch("a version 2 row without content_digest")
    return row_hash(stored_prev, canonical_bytes_v2(row, bytes(committed)), HASH_VERSION_ERASABLE)


def _decoded(row: Mapping[str, Any]) -> dict[str, Any]:
    """A fetched row with its JSON columns decoded exactly (as the connection's JSONB codec would)."""
    return {
        column: exactjson.loads(value.encode()) if column in _DECODED_COLUMNS and value is not None else value
        for column, value in row.items()
    }


def _content_problem(row: Mapping[str, Any]) -> str | None:
    """What is wrong with a version 2 row's content (kept apart, checked against the signed digest)."""
    if row["hash_version"] != HASH_VERSION_ERASABLE:
        return None
    if row["content"]:
        return "a version 2 row holds content in the row itself, outside its content_digest"
    salt = row["content_salt"]
    if salt is not None and content_digest(bytes(salt), row["erasable_content"]) != bytes(row["content_digest"]):
        return "content does not match the row's content_digest"
    return None


def _classify(
    row: Mapping[str, Any],
    nxt: Mapping[str, Any] | None,
    expected_prev: bytes | None,
    expected_seq: int,
    tenant: str,
    book: KeyBook,
    seq_of_hash: Callable[[bytes], int | None] = lambda _: None,
) -> Break | None:
    """The first thing wrong with ``row``, if anything; ``nxt`` is the row after it, when there is one."""
    seq = row["chain_seq"]

    def brk(kind: str, detail: str, at: int = seq) -> Break:
        return Break(tenant, at, kind, detail)

    if seq != expected_seq:
        return brk("deleted", f"sequence {expected_seq} is missing (next row is {seq})", expected_seq)
    stored_prev, stored_hash = bytes(row["prev_hash"]), bytes(row["row_hash"])
    skipped_over = nxt is not None and expected_prev is not None and bytes(nxt["prev_hash"]) == expected_prev
    if row["hash_version"] not in _KNOWN_VERSIONS:
        return brk("modified", f"unknown hash version {row['hash_version']}")
    try:
        digest = _row_digest(row, stored_prev)
    except _ContentMismatch as exc:
        return brk("modified", str(exc))
    except _UNCANONICAL as exc:  # NaN cost, a non-finite number in JSON: nothing the signer writes
        return brk("modified", f"row contents have no canonical form ({type(exc).__name__})")
    if expected_prev is not None and stored_prev != expected_prev:
        if nxt is not None and stored_prev == bytes(nxt["row_hash"]):
            return brk("reordered", f"row {seq} links to row {nxt['chain_seq']}, which comes after it")
        linked = seq_of_hash(stored_prev)
        if linked is not None and linked != seq - 1:
            return brk("reordered", f"row {seq} links to row {linked}")
        if skipped_over:
            return brk("inserted", "the chain skips this row: its successor links to the row before it")
        if nxt is not None and bytes(nxt["prev_hash"]) == stored_hash and digest != stored_hash:
            return brk("deleted", "the row before this one is gone and the rows after it were renumbered")
        return brk("modified", "prev_hash does not link to the previous row")
    if digest != stored_hash:
        if skipped_over:
            return brk("inserted", "the chain skips this row: its successor links to the row before it")
        return brk("modified", "row contents do not match row_hash")
    key_id = row["signing_key_id"]
    public_key = book.keys.get(key_id)
    problem = None
    if public_key is None:
        problem = f"untrusted key {key_id}: not among the trusted keys"
    elif (active := book.active_key(tenant, seq)) is None:
        problem = "no signing key is published for this sequence number"
    elif active != key_id:
        problem = f"signed with key {key_id}, but key {active} is the one published for this sequence"
    elif not verify_signature(public_key, digest, bytes(row["signature"])):
        problem = "signature does not verify"
    if problem is not None:
        if skipped_over:
            return brk("inserted", f"the chain skips this row ({problem})")
        return brk("bad_signature", problem)
    try:
        content_problem = _content_problem(row)
    except _UNCANONICAL as exc:
        return brk("modified", f"content has no canonical form ({type(exc).__name__})")
    if content_problem is not None:
        return brk("modified", content_problem)
    return None


# Canonical bytes of the JSON texts seen lately, as orjson fragments; None for a text the exact path decides.
_json_fragments: dict[str, orjson.Fragment | None] = {}
_JSON_FRAGMENTS_KEPT = 4096
_SORTED_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER | orjson.OPT_UTC_Z
_IN_ORDER_OPTIONS = orjson.OPT_STRICT_INTEGER | orjson.OPT_UTC_Z
_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_HASHED_JSON_V2 = tuple(c for c in _CANONICAL_ORDER_V2 if c in _JSON_COLUMNS)
# Every member present, in canonical order: a copy filled from a row keeps that order.
_DOCUMENT_V2 = dict.fromkeys(_CANONICAL_ORDER_V2)
_INDEX = {column: index for index, column in enumerate((*ROW_COLUMNS, "content_salt", "erasable_content"))}
_SEQ, _VERSION, _PREV, _HASH, _SIGNATURE, _KEY_ID = (
    _INDEX[c] for c in ("chain_seq", "hash_version", "prev_hash", "row_hash", "signature", "signing_key_id"))
_CONTENT, _DIGEST, _SALT, _ERASABLE = (_INDEX[c] for c in ("content", "content_digest", "content_salt",
                                                           "erasable_content"))
_PLANE, _EVENT_TYPE = _INDEX["plane"], _INDEX["event_type"]
_utc_text = functools.lru_cache(maxsize=256)(format_timestamp)


def _json_fragment(text: str) -> orjson.Fragment | None:
    """The canonical bytes of a JSON text, when compact key-sorted orjson output is them (``json_is_plain``)."""
    try:
        return _json_fragments[text]
    except KeyError:
        pass
    try:
        value = orjson.loads(text)
        fragment = orjson.Fragment(orjson.dumps(value, option=_JSON_OPTIONS)) if json_is_plain(value) else None
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
        fragment = None
    if len(_json_fragments) >= _JSON_FRAGMENTS_KEPT:
        _json_fragments.clear()
    _json_fragments[text] = fragment
    return fragment


def _fast_canonical(row: asyncpg.Record, version: int) -> bytes | None:
    """The canonical bytes of a fetched row in one orjson call: the same bytes as ``canonical_bytes`` (version
    1) or ``canonical_bytes_v2`` (version 2) of the decoded row, or None where the general path must decide."""
    document = _DOCUMENT_V2.copy()
    document.update(zip(_CANONICAL_ORDER_V2, row, strict=False))
    for column in _HASHED_JSON_V2:
        text = document[column]
        if text is not None:
            fragment = _json_fragment(text)
            if fragment is None:
                return None
            document[column] = fragment
    event_time, received_at = document["event_time"], document["received_at"]
    if type(event_time) is not datetime or type(received_at) is not datetime:
        return None
    # orjson writes a UTC instant as the canonical text itself, but leaves out ".000000".
    if event_time.tzinfo is not UTC or event_time.microsecond == 0:
        if event_time.tzinfo is None:
            return None
        document["event_time"] = format_timestamp(event_time)
    if received_at.tzinfo is not UTC or received_at.microsecond == 0:
        if received_at.tzinfo is None:
            return None
        # The events of one request share their received_at: its last few texts are worth keeping.
        document["received_at"] = _utc_text(received_at)
    cost = document["cost"]
    if cost is not None:
        if type(cost) is not Decimal:
            return None
        document["cost"] = format_cost(cost)
    if version == HASH_VERSION_ERASABLE:
        document["content_digest"] = row[_DIGEST].hex()
        options = _IN_ORDER_OPTIONS  # the members are in canonical order already
    else:
        del document["content_digest"]
        text = row[_CONTENT]
        if text is not None:
            if (fragment := _json_fragment(text)) is None:
                return None
            document["content"] = fragment
        else:
            document["content"] = None
        options = _SORTED_OPTIONS
    try:
        return orjson.dumps(document, option=options)
    except orjson.JSONEncodeError:  # an integer beyond 2^53, which the general path writes as a string
        return None


def _content_holds(row: asyncpg.Record) -> bool:
    """A version 2 row's content is as its content_digest says (or erased): the common case of
    ``_content_problem`` is None, checked on the JSON text."""
    if row[_CONTENT] != "{}":
        return False  # content in the row itself (or an unusual empty value): _content_problem decides
    salt, text = row[_SALT], row[_ERASABLE]
    if salt is None:
        return True
    if text is None:
        return False
    try:
        value = orjson.loads(text)
        if not json_is_plain(value):
            return False
        canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)  # as canonical_content writes plain JSON
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
        return False
    return bool(hashlib.sha256(salt + canonical).digest() == row[_DIGEST])


def _holds(row: asyncpg.Record, expected_prev: bytes | None, expected_seq: int, tenant: str, book: KeyBook) -> bool:
    """The common case, checked with as little work as possible: the row links, hashes and verifies. When it
    does not, ``_classify`` works out what kind of break it is."""
    stored_prev, version = row[_PREV], row[_VERSION]
    if row[_SEQ] != expected_seq or (expected_prev is not None and stored_prev != expected_prev):
        return False
    if version == HASH_VERSION_ERASABLE:
        if row[_DIGEST] is None:
            return False
    elif version != HASH_VERSION_PLAIN:
        return False
    canonical = _fast_canonical(row, version)
    if canonical is None:
        return False
    digest = hashlib.sha256(DOMAIN_TAGS[version] + stored_prev + canonical).digest()
    if digest != row[_HASH]:
        return False
    key_id = row[_KEY_ID]
    public_key = book.keys.get(key_id)
    return (
        public_key is not None
        and book.active_key(tenant, expected_seq) == key_id
        and verify_signature(public_key, digest, row[_SIGNATURE])
        and (version == HASH_VERSION_PLAIN or _content_holds(row))
    )


async def _fetch(conn: asyncpg.Connection, tenant: str, first: int, last: int) -> list[Any]:
    rows: list[Any] = []
    start = first
    while start <= last:
        page = await conn.fetch(_SELECT_RANGE, tenant, start, min(last, start + _PAGE - 1))
        rows.extend(page)
        start += _PAGE
    return rows


# Rows whose timestamps no client library can represent (years past 9999 or BC): never written by the signer.
_UNREADABLE = (
    "SELECT chain_seq FROM audit_logs WHERE tenant_id = $1 AND chain_seq BETWEEN $2 AND $3 AND ("
    " event_time < '0001-01-01T00:00:00Z' OR event_time > '9999-12-31T23:59:59.999999Z'"
    " OR received_at < '0001-01-01T00:00:00Z' OR received_at > '9999-12-31T23:59:59.999999Z'"
    ") ORDER BY chain_seq LIMIT 1"
)


async def verify_range(
    conn: asyncpg.Connection, tenant: str, first: int, last: int, book: KeyBook, *, peek_next: bool = True
) -> RangeResult:
    """Checks rows ``first..last`` (inclusive), using the rows just outside the range for context."""
    try:
        rows = await _fetch(conn, tenant, max(1, first - 1), last + 1 if peek_next else last)
    except (OverflowError, ValueError):
        # A value that cannot even be read: the rows before it are checked, then it is the break.
        bad = await conn.fetchval(_UNREADABLE, tenant, max(1, first - 1), last + 1)
        if bad is None:
            raise
        if bad > first:
            before = await verify_range(conn, tenant, first, min(last, bad - 1), book, peek_next=False)
            if before.brk is not None or bad > last:
                return before
        unreadable = Break(tenant, bad, "modified", "a timestamp of this row is out of range (no signed row has one)")
        return RangeResult(first, last, max(0, bad - first), unreadable)
    prev_row = rows[0] if rows and rows[0]["chain_seq"] == first - 1 else None
    body = [r for r in rows if first <= r["chain_seq"] <= last]
    peek = rows[-1] if rows and rows[-1]["chain_seq"] == last + 1 else None
    if first > 1 and prev_row is None:
        # The first link cannot be checked: that is a break (found, with the lowest number, by the range
        # before, which also holds the missing row), never a pass.
        missing = first - 1
        return RangeResult(first, last, 0, Break(tenant, missing, "deleted", f"sequence {missing} is missing"))
    if not body:
        return RangeResult(first, last, 0, Break(tenant, first, "deleted", f"sequences {first}-{last} are missing"))
    expected_prev: bytes | None = GENESIS_HASH if first == 1 else (bytes(prev_row["row_hash"]) if prev_row else None)
    expected_seq = first
    index_of_hashes: dict[bytes, int] = {}

    def seq_of_hash(digest: bytes) -> int | None:
        # Built only when a link is broken, to tell rows moved far apart from rows altered.
        if not index_of_hashes:
            index_of_hashes.update((bytes(r["row_hash"]), r["chain_seq"]) for r in rows)
        return index_of_hashes.get(digest)

    erased: list[int] = []
    erasures: list[tuple[int, tuple[int, ...]]] = []

    def result(rows_held: int, problem: Break | None) -> RangeResult:
        return RangeResult(first, last, rows_held, problem, tuple(erased), tuple(erasures))

    for index, row in enumerate(body):
        try:
            holds = _holds(row, expected_prev, expected_seq, tenant, book)
        except _UNCANONICAL:
            holds = False
        if not holds:
            stored_prev = bytes(row["prev_hash"])
            if expected_prev not in (None, stored_prev) and seq_of_hash(stored_prev) is None:
                # The row links to one outside this range (moved far): find where, to name the break right.
                linked = await conn.fetchval(
                    "SELECT chain_seq FROM audit_logs WHERE tenant_id = $1 AND row_hash = $2", tenant, stored_prev
                )
                if linked is not None:
                    index_of_hashes[stored_prev] = linked
            # Of the row after it, only its sequence number and hashes are looked at.
            nxt = body[index + 1] if index + 1 < len(body) else peek
            try:
                decoded = _decoded(row)
            except ValueError as exc:  # JSON nested deeper than any decoder follows: nothing the signer writes
                return result(index, Break(tenant, row[_SEQ], "modified",
                                           f"row contents have no canonical form ({type(exc).__name__})"))
            problem = _classify(decoded, nxt, expected_prev, expected_seq, tenant, book, seq_of_hash)
            if problem is not None:
                return result(index, problem)
        if row[_VERSION] == HASH_VERSION_ERASABLE:
            if row[_SALT] is None:
                erased.append(row[_SEQ])
            if row[_PLANE] == ERASURE_PLANE and row[_EVENT_TYPE] == ERASURE_EVENT_TYPE:
                erasures.append((row[_SEQ], tuple(erased_sequences(_decoded(row)["attributes"]))))
        expected_prev, expected_seq = row[_HASH], row[_SEQ] + 1
    if body and body[-1]["chain_seq"] < last:
        missing = body[-1]["chain_seq"] + 1
        return result(len(body), Break(tenant, missing, "deleted", f"sequence {missing} is missing"))
    return result(len(body), None)


# One connection and event loop per worker process, kept for all the ranges it checks.
_worker_loop: asyncio.AbstractEventLoop | None = None
_worker_conn: asyncpg.Connection | None = None


def _start_worker(dsn: str) -> None:
    global _worker_loop, _worker_conn  # noqa: PLW0603 - per-process state of a pool worker
    # Pages of thousands of rows are alive at once and hold no reference cycles: the cyclic collector, at
    # its default threshold, would walk them every few hundred allocations.
    gc.set_threshold(100_000, 50, 100)
    _worker_loop = asyncio.new_event_loop()
    # No JSON codecs: verify_range reads JSON columns as text.
    _worker_conn = _worker_loop.run_until_complete(asyncpg.connect(dsn))


def _verify_range_in_worker(tenant: str, first: int, last: int, book: KeyBook) -> RangeResult:
    assert _worker_loop is not None and _worker_conn is not None
    return _worker_loop.run_until_complete(verify_range(_worker_conn, tenant, first, last, book))


async def load_key_book(conn: asyncpg.Connection, pinned: Mapping[str, bytes] | None = None) -> KeyBook:
    """Keys and windows as the database publishes them. Activations made after a key was retired are left
    out, so rows a retired key signed afterwards fail verification. With ``pinned`` (the trusted keys of
    the witness), only those keys are trusted: a key the database knows but the pin does not is untrusted."""
    # A key id is the fingerprint of its key: a stored id that is not is no key at all.
    keys = dict(pinned) if pinned is not None else {
        row["key_id"]: bytes(row["public_key"])
        for row in await conn.fetch("SELECT key_id, public_key FROM signing_keys")
        if key_id_for(bytes(row["public_key"])) == row["key_id"]
    }
    activations: dict[str, list[tuple[int, str]]] = {}
    for row in await conn.fetch(
        "SELECT a.tenant_id, a.from_seq, a.key_id FROM key_activations a JOIN signing_keys k USING (key_id)"
        " WHERE k.valid_until IS NULL OR a.created_at <= k.valid_until ORDER BY a.tenant_id, a.from_seq"
    ):
        activations.setdefault(row["tenant_id"], []).append((row["from_seq"], row["key_id"]))
    return KeyBook(keys, activations, from_database=True, pinned=pinned is not None)


def key_book_from_export(lines: Iterable[str]) -> KeyBook:
    """An auditor's saved ``auditctl signing-keys export``: keys and windows, independent of the database."""
    keys: dict[str, bytes] = {}
    activations: dict[str, list[tuple[int, str]]] = {}
    for line in lines:
        if not line.strip():
            continue
        entry = json.loads(line)
        public_key = base64.b64decode(entry["public_key"])
        key_id = key_id_for(public_key)  # recomputed, never taken from the file
        keys[key_id] = public_key
        valid_until = datetime.fromisoformat(entry["valid_until"]) if entry.get("valid_until") else None
        for activation in entry.get("activations", []):
            made = activation.get("created_at")
            if valid_until is not None and made is not None and datetime.fromisoformat(made) > valid_until:
                continue  # activated after the key was retired: not a window of this key
            activations.setdefault(activation["tenant_id"], []).append((int(activation["from_seq"]), key_id))
    return KeyBook(keys, {tenant: sorted(pairs) for tenant, pairs in activations.items()})


async def published_keys(conn: asyncpg.Connection) -> dict[str, bytes]:
    return dict((await load_key_book(conn)).keys)


async def tenants(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        # Listed in the database's collation for people, as before tenant_id compared as bytes (migration 1000).
        "SELECT tenant_id FROM (SELECT tenant_id FROM chain_heads UNION SELECT DISTINCT tenant_id FROM audit_logs) t"
        ' ORDER BY tenant_id COLLATE "default"'
    )
    return [row["tenant_id"] for row in rows]


def check_checkpoint(cp: Checkpoint, row_hash_at: bytes | None, last_seq: int, book: KeyBook) -> Break | None:
    public_key = book.keys.get(cp.key_id)
    message = checkpoint_message(cp.tenant_id, cp.chain_seq, cp.head_hash, cp.created_at, cp.key_id)
    if public_key is None or not verify_signature(public_key, message, cp.signature):
        return Break(cp.tenant_id, cp.chain_seq, "bad_signature", "checkpoint signature does not verify")
    if cp.chain_seq > last_seq:
        return Break(
            cp.tenant_id,
            last_seq + 1,
            "truncated",
            f"a checkpoint shows sequence {cp.chain_seq}, the chain stops at {last_seq}",
        )
    if row_hash_at is None:
        return Break(cp.tenant_id, cp.chain_seq, "deleted", "the row a checkpoint covers is missing")
    if row_hash_at != cp.head_hash:
        return Break(cp.tenant_id, cp.chain_seq, "modified", "the chain differs from a signed checkpoint (rollback?)")
    return None


Progress = Callable[[str, int, int, float], None]


@dataclass
class _Plan:
    report: TenantReport
    head: int | None
    last_seq: int
    ranges: list[tuple[int, int]]
    results: list[RangeResult] = field(default_factory=list)
    head_hash: bytes | None = None
    head_row_hash: bytes | None = None
    # The highest chain_seq stored, which may lie past the head (rewound) or far off (a row renumbered).
    stored_last: int = 0
    # The first row of 1..last_seq whose sequence_conflict flag is altered, once looked up.
    altered_conflict: int | None = None
    conflicts_checked: bool = False


async def _check_conflict_flags(conn: asyncpg.Connection, plans: Iterable[_Plan]) -> None:
    for plan in plans:
        plan.altered_conflict = await conn.fetchval(_ALTERED_CONFLICT_FLAG, plan.report.tenant_id, plan.last_seq)
        plan.conflicts_checked = True


async def verify_tenant(
    conn: asyncpg.Connection,
    tenant: str,
    book: KeyBook | Mapping[str, bytes],
    *,
    dsn: str | None = None,
    checkpoints: Iterable[Checkpoint] = (),
    workers: int | None = None,
    progress: Progress | None = None,
) -> TenantReport:
    """Verify one chain. With ``dsn`` set and a long chain, ranges are checked in parallel processes."""
    (report,) = await verify_tenants(
        conn, [tenant], book, dsn=dsn, checkpoints=checkpoints, workers=workers, progress=progress
    )
    return report


async def verify_tenants(
    conn: asyncpg.Connection,
    names: Sequence[str],
    book: KeyBook | Mapping[str, bytes],
    *,
    dsn: str | None = None,
    checkpoints: Iterable[Checkpoint] = (),
    workers: int | None = None,
    progress: Progress | None = None,
) -> list[TenantReport]:
    """Verify several chains. With ``dsn`` set, the ranges of all of them share one pool of processes, each
    with its own database connection, so every core stays busy however the rows are spread over tenants."""
    if not isinstance(book, KeyBook):
        book = KeyBook(dict(book), (await load_key_book(conn)).activations)
    plans = [await _plan(conn, tenant) for tenant in names]
    if book.from_database:
        # Keys and windows as of now, after the heads: a rotation that happened meanwhile is included.
        book = await load_key_book(conn, book.keys if book.pinned else None)
    jobs = [(plan, a, b) for plan in plans for a, b in plan.ranges]
    started = time.monotonic()

    def report_progress(plan: _Plan) -> None:
        if progress:
            done = sum(r.rows for r in plan.results)
            progress(plan.report.tenant_id, done, plan.last_seq, time.monotonic() - started)

    if dsn is not None and len(jobs) > 1:
        loop = asyncio.get_running_loop()
        processes = min(workers or os.cpu_count() or 1, len(jobs))
        jobs = _finer_at_the_end(jobs, processes)
        # This connection is idle while the processes check ranges: the conflict flags are checked on it
        # meanwhile, rather than one chain after another once every range is done.
        flags = asyncio.ensure_future(_check_conflict_flags(conn, plans))
        try:
            with ProcessPoolExecutor(max_workers=processes, initializer=_start_worker, initargs=(dsn,)) as pool:

                async def check(plan: _Plan, first: int, last: int) -> tuple[_Plan, RangeResult]:
                    tenant = plan.report.tenant_id
                    return plan, await loop.run_in_executor(pool, _verify_range_in_worker, tenant, first, last, book)

                # Tasks made in order hand the ranges to the pool in order, the finer ones last.
                for job in asyncio.as_completed([asyncio.ensure_future(check(*job)) for job in jobs]):
                    plan, result = await job
                    plan.results.append(result)
                    report_progress(plan)
        finally:
            await flags
    else:
        for plan in plans:
            for a, b in plan.ranges:
                plan.results.append(await verify_range(conn, plan.report.tenant_id, a, b, book))
                report_progress(plan)
                if plan.results[-1].brk:
                    break
    for plan in plans:
        await _conclude(conn, plan, book, checkpoints)
    return [plan.report for plan in plans]


def _finer_at_the_end(jobs: list[tuple[_Plan, int, int]], processes: int) -> list[tuple[_Plan, int, int]]:
    """The same rows, with the last few ranges cut in quarters: the processes then finish close together,
    rather than all but one waiting while it checks a whole range."""
    cut = max(0, len(jobs) - 2 * processes)
    finer: list[tuple[_Plan, int, int]] = []
    for plan, first, last in jobs[cut:]:
        step = -(-(last - first + 1) // 4)
        finer.extend((plan, start, min(last, start + step - 1)) for start in range(first, last + 1, step))
    return jobs[:cut] + finer


@contextlib.asynccontextmanager
async def _snapshot(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """One consistent view for the reads inside (the caller's own transaction, if it has one)."""
    if conn.is_in_transaction():
        yield
        return
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        yield


async def _plan(conn: asyncpg.Connection, tenant: str) -> _Plan:
    # The head and the last row from one snapshot: the signer moves both in one transaction, so they agree
    # unless someone changed one without the other. Rows appended afterwards are simply not looked at.
    async with _snapshot(conn):
        head = await conn.fetchrow("SELECT head_seq, head_hash FROM chain_heads WHERE tenant_id = $1", tenant)
        stored_last = await conn.fetchval(
            "SELECT coalesce(max(chain_seq), 0) FROM audit_logs WHERE tenant_id = $1", tenant
        )
        head_seq = None if head is None else int(head["head_seq"])
        if head_seq is not None:
            # Rows 1..head are checked; rows past the head are a break whatever they hold.
            last_seq = min(stored_last, head_seq)
        elif stored_last:
            # No head at all: as many rows as there are (a row renumbered far away must not plan a huge range).
            last_seq = min(stored_last, await conn.fetchval("SELECT count(*) FROM audit_logs WHERE tenant_id = $1",
                                                            tenant))
        else:
            last_seq = 0
        head_row_hash = await conn.fetchval(
            "SELECT row_hash FROM audit_logs WHERE tenant_id = $1 AND chain_seq = $2", tenant, head_seq or 0
        )
    ranges = [(start, min(last_seq, start + RANGE_ROWS - 1)) for start in range(1, last_seq + 1, RANGE_ROWS)]
    return _Plan(
        TenantReport(tenant),
        head_seq,
        last_seq,
        ranges,
        head_hash=None if head is None else bytes(head["head_hash"]),
        head_row_hash=None if head_row_hash is None else bytes(head_row_hash),
        stored_last=stored_last,
    )


def _head_break(plan: _Plan) -> Break | None:
    """The chain head against rows 1..last_seq, which all hold."""
    tenant, head, last_seq, stored = plan.report.tenant_id, plan.head, plan.last_seq, plan.stored_last
    if head is not None and head > last_seq:
        return Break(tenant, last_seq + 1, "truncated", f"the chain head is at {head}, the rows stop at {last_seq}")
    if stored > (head or 0):
        at = (head or 0) + 1
        where = "there is no chain head" if head is None else f"the chain head is at {head}"
        return Break(tenant, at, "head_mismatch", f"{where}, but the rows go on to {stored} (head rewound?)")
    if head and plan.head_hash != plan.head_row_hash:
        return Break(tenant, head, "head_mismatch", f"the chain head's hash is not the hash of row {head}")
    return None


# sequence_conflict is not hashed but derived (docs/auditing.md): true exactly when another row of the tenant
# has the same non-null session_id and event_sequence. The first row where the stored flag says otherwise.
# The pairs held by more than one row are found in one pass over the tenant's rows (a hash aggregate), rather
# than by one index probe per row: this runs beside the range checks, on the same cores.
_ALTERED_CONFLICT_FLAG = """
WITH shared_pairs AS (
    SELECT session_id, event_sequence FROM audit_logs
    WHERE tenant_id = $1 AND session_id IS NOT NULL AND event_sequence IS NOT NULL
    GROUP BY session_id, event_sequence HAVING count(*) > 1)
SELECT a.chain_seq FROM audit_logs a
LEFT JOIN shared_pairs p ON p.session_id = a.session_id AND p.event_sequence = a.event_sequence
WHERE a.tenant_id = $1 AND a.chain_seq <= $2 AND a.sequence_conflict IS DISTINCT FROM (p.session_id IS NOT NULL)
ORDER BY a.chain_seq LIMIT 1
"""


async def _conclude(conn: asyncpg.Connection, plan: _Plan, book: KeyBook, checkpoints: Iterable[Checkpoint]) -> None:
    report, tenant, last_seq = plan.report, plan.report.tenant_id, plan.last_seq
    erased: list[int] = []
    recorded: set[int] = set()
    for result in sorted(plan.results, key=lambda r: r.first_seq):
        report.rows += result.rows
        erased.extend(result.erased)
        # An erasure event covers only rows before it: it cannot vouch for content erased after it was signed.
        recorded.update(seq for event_seq, listed in result.erasures for seq in listed if seq < event_seq)
        if result.brk is not None:
            report.breaks.append(result.brk)
            break
    unrecorded = [seq for seq in erased if seq not in recorded]
    report.erased = len(erased) - len(unrecorded)
    if unrecorded and (not report.breaks or unrecorded[0] < report.breaks[0].chain_seq):
        report.breaks[:] = [Break(tenant, unrecorded[0], "unrecorded_erasure",
                                  "the row's content is gone, but no signed erasure event of the chain lists it "
                                  f"({len(unrecorded)} such rows)")]
    report.head_seq = last_seq if report.ok else report.breaks[0].chain_seq - 1
    if report.ok and (problem := _head_break(plan)) is not None:
        report.breaks.append(problem)
    if report.ok:
        altered = (plan.altered_conflict if plan.conflicts_checked
                   else await conn.fetchval(_ALTERED_CONFLICT_FLAG, tenant, last_seq))
        if altered is not None:
            report.breaks.append(Break(tenant, altered, "modified",
                                       "sequence_conflict differs from the one the hashed columns give"))
    ordered = sorted((c for c in checkpoints if c.tenant_id == tenant), key=lambda c: c.chain_seq)
    if not report.ok or not ordered:
        return
    found = await conn.fetch(
        "SELECT chain_seq, row_hash FROM audit_logs WHERE tenant_id = $1 AND chain_seq = ANY($2::bigint[])",
        tenant,
        sorted({c.chain_seq for c in ordered if c.chain_seq <= last_seq}),
    )
    hashes = {r["chain_seq"]: bytes(r["row_hash"]) for r in found}
    for cp in ordered:
        report.checkpoints_checked += 1
        problem = check_checkpoint(cp, hashes.get(cp.chain_seq), last_seq, book)
        if problem is not None:
            report.breaks.append(problem)
            break


async def stored_checkpoints(conn: asyncpg.Connection, tenant: str | None = None) -> list[Checkpoint]:
    """The checkpoints in the database, every column of each (as the witness publishes them)."""
    # Tenants in the database's collation, as printed before tenant ids compared as bytes (1000_tenant_collation).
    rows = await conn.fetch(
        "SELECT * FROM chain_checkpoints WHERE $1::text IS NULL OR tenant_id = $1"
        ' ORDER BY tenant_id COLLATE "default", chain_seq',
        tenant,
    )
    return [Checkpoint.from_record(checkpoint_record(r)) for r in rows]


def witnessed_checkpoints(records: Iterable[Mapping[str, Any]]) -> list[Checkpoint]:
    """The checkpoints of a witness's records; a record that is not a well-formed checkpoint is skipped."""
    found = []
    for record in records:
        try:
            found.append(Checkpoint.from_record(record))
        except (KeyError, ValueError, TypeError):
            continue
    return found


# The erasure rule of _conclude in one query, for the reporter's incremental check: the lowest version 2 row
# up to ``$2`` (checked rows only) whose content is gone and that no later erasure event up to ``$2`` lists.
_UNRECORDED_ERASURE = (
    "SELECT a.chain_seq FROM audit_logs a WHERE a.tenant_id = $1 AND a.chain_seq <= $2 AND a.hash_version = 2"  # noqa: S608 - constants
    " AND NOT EXISTS (SELECT 1 FROM audit_content c WHERE c.tenant_id = a.tenant_id AND c.chain_seq = a.chain_seq)"
    " AND NOT EXISTS (SELECT 1 FROM audit_logs e WHERE e.tenant_id = a.tenant_id"
    f" AND e.plane = '{ERASURE_PLANE}' AND e.event_type = '{ERASURE_EVENT_TYPE}' AND e.hash_version = 2"
    " AND e.chain_seq > a.chain_seq AND e.chain_seq <= $2"
    " AND jsonb_typeof(e.attributes->'erasure.rows') = 'array'"
    " AND e.attributes->'erasure.rows' @> to_jsonb(a.chain_seq))"
    " ORDER BY a.chain_seq LIMIT 1"
)


async def unrecorded_erasure(conn: asyncpg.Connection, tenant: str, until: int) -> Break | None:
    """An ``unrecorded_erasure`` break among rows ``1..until`` (which must already hold), if there is one."""
    seq = await conn.fetchval(_UNRECORDED_ERASURE, tenant, until)
    if seq is None:
        return None
    return Break(tenant, seq, "unrecorded_erasure",
                 "the row's content is gone, but no signed erasure event of the chain lists it")
