"""Batches hashed and signed ahead of their transaction: written as prepared when the chain is where they
expect it, chained again under lock when it is not, and never forking or duplicating a chain."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import asyncpg
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from services.signer.appender import (
    AppendResult,
    CheckpointPolicy,
    Head,
    OffsetEvent,
    PreparedBatch,
    append_batch,
    append_prepared,
    prepare,
)
from services.signer.rows import ChainRow, decode_row
from services.signer.signing import HelperProcessSigner, SigningHelperError
from services.signer.worker import SignerMetrics, SignerWorker
from shared.db.pool import connect, create_pool
from shared.enrollment import record_signing_key
from shared.keys import Ed25519Signer
from shared.verify import load_key_book, verify_tenant
from tests.integration.signer.test_append import event
from tests.messages_support import canonical_headers, canonical_keyring
from tests.unit.ops.fakes import FakeProducer


def rows(first_offset: int, events: range, tenant: str = "t1") -> list[OffsetEvent]:
    return [
        OffsetEvent(first_offset + i, decode_row(event(n, tenant).to_json())) for i, n in enumerate(events)
    ]


async def _prepare(
    db: asyncpg.Connection, key: Ed25519Signer, batch: list[OffsetEvent], heads: dict[str, Head], **kw: object
) -> PreparedBatch:
    return await prepare(db, key, batch, heads, **kw)  # type: ignore[arg-type]


async def _write(db: asyncpg.Connection, key: Ed25519Signer, prepared: PreparedBatch, partition: int = 0) -> AppendResult:
    return await append_prepared(db, key, prepared, group="g", topic="c", partition=partition)


async def _chain(db: asyncpg.Connection, tenant: str = "t1") -> list[tuple[int, str]]:
    found = await db.fetch(
        "SELECT chain_seq, event_id FROM audit_logs WHERE tenant_id = $1 ORDER BY chain_seq", tenant
    )
    return [(r["chain_seq"], r["event_id"]) for r in found]


async def verified(db: asyncpg.Connection, *tenants: str) -> bool:
    """Whether the chains of ``tenants`` (t1 when none is named) verify."""
    book = await load_key_book(db)
    return all([(await verify_tenant(db, tenant, book)).ok for tenant in tenants or ("t1",)])


async def test_consecutive_prepared_batches_are_written_as_prepared(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    heads: dict[str, Head] = {}
    first = await _prepare(db, signing_key, rows(0, range(3)), heads)
    # The second is prepared while the first is still unwritten: from the heads the first leaves.
    second = await _prepare(db, signing_key, rows(3, range(3, 6)), heads, in_flight=first.event_ids)
    assert (await _write(db, signing_key, first)).as_prepared
    result = await _write(db, signing_key, second)
    assert result.as_prepared and result.appended == 3 and result.heads == {"t1": 6}
    assert [seq for seq, _ in await _chain(db)] == [1, 2, 3, 4, 5, 6]
    assert await verified(db)


async def test_an_event_in_flight_is_not_chained_twice(db: asyncpg.Connection, signing_key: Ed25519Signer) -> None:
    await record_signing_key(db, signing_key.public_key)
    heads: dict[str, Head] = {}
    first = await _prepare(db, signing_key, rows(0, range(3)), heads)
    second = await _prepare(db, signing_key, rows(3, range(2, 5)), heads, in_flight=first.event_ids)
    assert second.duplicates == 1
    await _write(db, signing_key, first)
    result = await _write(db, signing_key, second)
    assert (result.as_prepared, result.appended, result.duplicates) == (True, 2, 1)
    assert [e for _, e in await _chain(db)] == [f"t1-ev-{n}" for n in range(5)]
    assert await verified(db)


async def _second_batch_prepared_after_a_first_written(db: asyncpg.Connection, key: Ed25519Signer) -> PreparedBatch:
    await record_signing_key(db, key.public_key)
    heads: dict[str, Head] = {}
    await _write(db, key, await _prepare(db, key, rows(0, range(3)), heads))
    return await _prepare(db, key, rows(3, range(3, 6)), heads)


async def test_a_batch_another_signer_already_wrote_is_skipped(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    ours = await _second_batch_prepared_after_a_first_written(db, signing_key)
    # A zombie signer of the same partition writes the same messages first.
    await append_batch(db, signing_key, group="g", topic="c", partition=0, batch=rows(3, range(3, 6)))
    result = await _write(db, signing_key, ours)
    assert (result.as_prepared, result.appended, result.stale) == (False, 0, 3)
    assert [seq for seq, _ in await _chain(db)] == [1, 2, 3, 4, 5, 6]


async def test_a_head_moved_by_someone_else_is_chained_after_under_lock(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    ours = await _second_batch_prepared_after_a_first_written(db, signing_key)
    # The same tenant's head moves through another partition (which the topic's keying never does):
    # one new event, and one of ours, which must then not be chained twice.
    await append_batch(db, signing_key, group="g", topic="c", partition=1, batch=rows(0, range(100, 101)))
    await append_batch(db, signing_key, group="g", topic="c", partition=1, batch=rows(1, range(4, 5)))
    result = await _write(db, signing_key, ours)
    assert (result.as_prepared, result.appended, result.duplicates) == (False, 2, 1)
    chain = await _chain(db)
    assert [seq for seq, _ in chain] == list(range(1, 8))
    assert sorted(e for _, e in chain) == sorted([f"t1-ev-{n}" for n in (0, 1, 2, 3, 4, 5, 100)])
    assert await verified(db)


async def test_prepared_batches_signed_on_the_helper_verify(db: asyncpg.Connection, signing_key: Ed25519Signer) -> None:
    await record_signing_key(db, signing_key.public_key)
    helper = await HelperProcessSigner.start(signing_key)
    try:
        heads: dict[str, Head] = {}
        offset = 0
        for start in range(0, 300, 100):
            batch = rows(0, range(start, start + 100)) + rows(0, range(3), "t2")
            # Offsets of one partition are consecutive: t2's events follow t1's in the same batch.
            batch = [OffsetEvent(offset + i, item.event) for i, item in enumerate(batch)]
            offset += len(batch)
            prepared = await _prepare(db, signing_key, batch, heads, batch_signer=helper)
            assert (await _write(db, signing_key, prepared)).as_prepared
    finally:
        await helper.close()
    assert await verified(db, "t1", "t2")
    assert len(await _chain(db, "t2")) == 3  # the same three events each time: chained once


def test_rows_keep_their_values_when_chained_again() -> None:
    row = decode_row(event(1).to_json())
    assert isinstance(row, ChainRow) and "prev_hash" not in row.values


# --- (a) A prepared batch written as prepared -------------------------------------------------------------------


async def _stored_offset(db: asyncpg.Connection, partition: int = 0) -> int | None:
    stored: int | None = await db.fetchval(
        "SELECT next_offset FROM signer_offsets WHERE consumer_group = 'g' AND topic = 'c' AND partition = $1",
        partition,
    )
    return stored


def plain_rows(first_offset: int, events: range, tenant: str = "t1") -> list[OffsetEvent]:
    """Rows without floats or big integers: the ones hashed in one orjson call."""
    made = [
        OffsetEvent(first_offset + i, decode_row(replace(event(n, tenant), attributes={"n": n}).to_json()))
        for i, n in enumerate(events)
    ]
    assert all(isinstance(item.event, ChainRow) and item.event.plain for item in made)
    return made


def _renumber(batch: list[OffsetEvent], first: int = 0) -> list[OffsetEvent]:
    return [OffsetEvent(first + i, item.event) for i, item in enumerate(batch)]


AS_PREPARED: dict[str, tuple[Callable[[], list[OffsetEvent]], dict[str, int]]] = {
    # name: (the batch, each tenant's chain length after it)
    "one event": (lambda: rows(0, range(1)), {"t1": 1}),
    "plain rows": (lambda: plain_rows(0, range(40)), {"t1": 40}),
    "rows with floats and big integers": (lambda: rows(0, range(40)), {"t1": 40}),
    "two tenants interleaved": (
        lambda: _renumber([x for pair in zip(rows(0, range(5)), plain_rows(0, range(5), "t2"), strict=True) for x in pair]),
        {"t1": 5, "t2": 5},
    ),
    "dead-lettered messages among them": (
        lambda: _renumber([OffsetEvent(0, None), *rows(0, range(3)), OffsetEvent(0, None)]),
        {"t1": 3},
    ),
    "more rows than a hashing chunk": (lambda: plain_rows(0, range(100)), {"t1": 100}),
}


@pytest.mark.parametrize(("make", "lengths"), list(AS_PREPARED.values()), ids=list(AS_PREPARED))
async def test_a_prepared_batch_is_written_as_prepared_and_verifies(
    db: asyncpg.Connection,
    signing_key: Ed25519Signer,
    make: Callable[[], list[OffsetEvent]],
    lengths: dict[str, int],
) -> None:
    await record_signing_key(db, signing_key.public_key)
    batch = make()
    heads: dict[str, Head] = {}
    prepared = await _prepare(db, signing_key, batch, heads)
    assert {t: h.seq for t, h in heads.items()} == lengths  # the caller's heads advance to the batch's end
    result = await _write(db, signing_key, prepared)
    assert result.as_prepared
    assert (result.appended, result.duplicates, result.stale) == (sum(lengths.values()), 0, 0)
    assert result.heads == lengths and result.next_offset == batch[-1].offset + 1
    assert await _stored_offset(db) == batch[-1].offset + 1
    for tenant, length in lengths.items():
        assert [seq for seq, _ in await _chain(db, tenant)] == list(range(1, length + 1))
        assert await verified(db, tenant)
    stored_heads = await db.fetch("SELECT tenant_id, head_seq, head_hash FROM chain_heads ORDER BY tenant_id")
    assert {r["tenant_id"]: (r["head_seq"], bytes(r["head_hash"])) for r in stored_heads} == {
        t: (h.seq, h.hash) for t, h in heads.items()
    }


async def test_prepared_batches_write_their_checkpoints(db: asyncpg.Connection, signing_key: Ed25519Signer) -> None:
    await record_signing_key(db, signing_key.public_key)
    heads: dict[str, Head] = {}
    policy = CheckpointPolicy(every_rows=4)
    first = await _prepare(db, signing_key, plain_rows(0, range(5)), heads, checkpoints=policy)
    second = await _prepare(
        db, signing_key, plain_rows(5, range(5, 10)), heads, in_flight=first.event_ids, checkpoints=policy
    )
    assert (await _write(db, signing_key, first)).checkpoints == 1
    assert (await _write(db, signing_key, second)).as_prepared
    assert [r["chain_seq"] for r in await db.fetch("SELECT chain_seq FROM chain_checkpoints ORDER BY 1")] == [5, 10]
    assert await verified(db)


# --- (b) Someone else moved the chain first: the prepared batch falls back, or is stale -------------------------


class Outcome(NamedTuple):
    as_prepared: bool
    appended: int
    duplicates: int
    stale: int


OTHER_KEY = Ed25519Signer.generate()

# What gets written through append_batch before our second batch (offsets 3-5, events 3-5) is appended,
# in place of our first batch (offsets 0-2, events 0-2), which was prepared but is never written.
FIRST: dict[str, tuple[Callable[[], list[OffsetEvent]], Ed25519Signer | None, Outcome, set[int]]] = {
    # name: (the batch written first, its key (None: ours), our second batch's outcome, events chained in the end)
    "other events, as many": (lambda: rows(0, range(10, 13)), None, Outcome(False, 3, 0, 0), {10, 11, 12, 3, 4, 5}),
    "the same events signed with another key": (
        lambda: rows(0, range(3)),
        OTHER_KEY,
        Outcome(False, 3, 0, 0),
        {0, 1, 2, 3, 4, 5},
    ),
    "fewer events at the same offsets": (
        lambda: [OffsetEvent(0, rows(0, range(10, 11))[0].event), OffsetEvent(1, None), OffsetEvent(2, None)],
        None,
        Outcome(False, 3, 0, 0),
        {10, 3, 4, 5},
    ),
    "one of our events among them": (
        lambda: _renumber([*rows(0, range(10, 11)), *rows(0, range(4, 5)), *rows(0, range(11, 12))]),
        None,
        Outcome(False, 2, 1, 0),
        {10, 4, 11, 3, 5},
    ),
    "running into our offsets": (lambda: rows(0, range(10, 15)), None, Outcome(False, 1, 0, 2), {10, 11, 12, 13, 14, 5}),
    "past all our offsets": (lambda: rows(0, range(10, 16)), None, Outcome(False, 0, 0, 3), set(range(10, 16))),
    # The very batch we prepared, from the same key: the same events, but each row has a fresh random content
    # salt (hash version 2), so the head differs from the one we expected and ours is chained again.
    "our first batch, exactly": (lambda: rows(0, range(3)), None, Outcome(False, 3, 0, 0), {0, 1, 2, 3, 4, 5}),
}


@pytest.mark.parametrize(("make_first", "key", "outcome", "chained"), list(FIRST.values()), ids=list(FIRST))
async def test_a_batch_prepared_on_a_chain_that_moved_otherwise_is_chained_again(
    db: asyncpg.Connection,
    signing_key: Ed25519Signer,
    make_first: Callable[[], list[OffsetEvent]],
    key: Ed25519Signer | None,
    outcome: Outcome,
    chained: set[int],
) -> None:
    await record_signing_key(db, signing_key.public_key)
    await record_signing_key(db, OTHER_KEY.public_key)
    heads: dict[str, Head] = {}
    ours_first = await _prepare(db, signing_key, rows(0, range(3)), heads)
    ours_second = await _prepare(db, signing_key, rows(3, range(3, 6)), heads, in_flight=ours_first.event_ids)
    # Our first batch is never written: another signer of the partition (a zombie) writes its offsets first.
    first = make_first()
    await append_batch(db, key or signing_key, group="g", topic="c", partition=0, batch=first)
    result = await _write(db, signing_key, ours_second)
    assert Outcome(result.as_prepared, result.appended, result.duplicates, result.stale) == outcome
    assert result.next_offset == max(6, first[-1].offset + 1) == await _stored_offset(db)
    chain = await _chain(db)
    assert [seq for seq, _ in chain] == list(range(1, len(chain) + 1))  # linear: no gap, no fork
    assert sorted(e for _, e in chain) == sorted(f"t1-ev-{n}" for n in chained)  # each event once
    assert await verified(db)


async def test_a_batch_prepared_on_an_empty_chain_that_someone_else_started(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    ours = await _prepare(db, signing_key, rows(3, range(3, 6)), {})
    assert ours.expected == {"t1": (0, bytes(32))}
    await append_batch(db, signing_key, group="g", topic="c", partition=0, batch=rows(0, range(10, 13)))
    result = await _write(db, signing_key, ours)
    assert (result.as_prepared, result.appended, result.heads) == (False, 3, {"t1": 6})
    assert [seq for seq, _ in await _chain(db)] == [1, 2, 3, 4, 5, 6]
    assert await verified(db)


async def test_one_moved_head_is_enough_to_chain_the_whole_batch_again(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    heads: dict[str, Head] = {}
    ours = await _prepare(db, signing_key, _renumber(rows(0, range(3)) + rows(0, range(3), "t2")), heads)
    # Only t2 moves, through another partition.
    await append_batch(db, signing_key, group="g", topic="c", partition=1, batch=rows(0, range(50, 52), "t2"))
    result = await _write(db, signing_key, ours)
    assert (result.as_prepared, result.appended, result.heads) == (False, 6, {"t1": 3, "t2": 5})
    for tenant, length in (("t1", 3), ("t2", 5)):
        assert [seq for seq, _ in await _chain(db, tenant)] == list(range(1, length + 1))
        assert await verified(db, tenant)


# --- (c) Batches prepared one after another, each from the heads the one before leaves --------------------------


@pytest.mark.parametrize("batches", [2, 5])
async def test_pipelined_batches_are_all_written_as_prepared(
    db: asyncpg.Connection, signing_key: Ed25519Signer, batches: int
) -> None:
    await record_signing_key(db, signing_key.public_key)
    heads: dict[str, Head] = {}
    in_flight: frozenset[str] = frozenset()
    prepared = []
    for b in range(batches):
        batch = _renumber(rows(0, range(b * 4, b * 4 + 4)) + plain_rows(0, range(b * 2, b * 2 + 2), "t2"), b * 6)
        prepared.append(await _prepare(db, signing_key, batch, heads, in_flight=in_flight))
        in_flight = prepared[-1].event_ids
    # Each one's expectations are the previous one's result.
    for before, after in itertools.pairwise(prepared):
        assert after.expected == {t: (h.seq, h.hash) for t, h in before.heads.items()}
    for p in prepared:
        assert (await _write(db, signing_key, p)).as_prepared
    assert [seq for seq, _ in await _chain(db)] == list(range(1, 4 * batches + 1))
    assert [seq for seq, _ in await _chain(db, "t2")] == list(range(1, 2 * batches + 1))
    assert await verified(db, "t1", "t2")
    assert await _stored_offset(db) == 6 * batches


# --- (d) Duplicates, wherever they come from, are skipped and counted --------------------------------------------

DUPLICATES: dict[str, tuple[list[int], list[int], int, int]] = {
    # name: (events of the first batch, of the second, the second's duplicates, chain length at the end)
    "in flight in the first batch": ([0, 1, 2], [2, 3, 4], 1, 5),
    "all in flight": ([0, 1, 2], [0, 1, 2], 3, 3),
    "repeated within the second batch": ([0, 1, 2], [3, 3, 4], 1, 5),
    "in flight and repeated": ([0, 1, 2], [1, 1, 3], 2, 4),
}


@pytest.mark.parametrize(("first", "second", "duplicates", "length"), list(DUPLICATES.values()), ids=list(DUPLICATES))
async def test_duplicates_are_skipped_and_counted(
    db: asyncpg.Connection,
    signing_key: Ed25519Signer,
    first: list[int],
    second: list[int],
    duplicates: int,
    length: int,
) -> None:
    await record_signing_key(db, signing_key.public_key)
    heads: dict[str, Head] = {}
    one = await _prepare(db, signing_key, _renumber([rows(0, range(n, n + 1))[0] for n in first]), heads)
    two = await _prepare(
        db, signing_key, _renumber([rows(0, range(n, n + 1))[0] for n in second], 3), heads, in_flight=one.event_ids
    )
    assert (one.duplicates, two.duplicates) == (0, duplicates)
    assert (await _write(db, signing_key, one)).as_prepared
    result = await _write(db, signing_key, two)
    assert (result.as_prepared, result.appended, result.duplicates) == (True, 3 - duplicates, duplicates)
    chain = await _chain(db)
    assert [seq for seq, _ in chain] == list(range(1, length + 1))
    assert len({e for _, e in chain}) == length
    assert await verified(db)


async def test_a_duplicate_already_stored_is_skipped_when_prepared(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    await append_batch(db, signing_key, group="g", topic="c", partition=1, batch=rows(0, range(1, 2)))
    prepared = await _prepare(db, signing_key, rows(0, range(3)), {})
    assert prepared.duplicates == 1
    result = await _write(db, signing_key, prepared)
    assert (result.as_prepared, result.appended, result.duplicates) == (True, 2, 1)
    assert await verified(db)


async def test_a_duplicate_that_appears_after_preparing_sends_the_batch_under_lock(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    await append_batch(db, signing_key, group="g", topic="c", partition=1, batch=rows(0, range(50, 51), "t2"))
    prepared = await _prepare(db, signing_key, rows(0, range(3)), {})
    # Another partition chains an event with one of our ids, under another tenant: t1's head does not move, so
    # only the unique event id catches it (a UniqueViolation in the COPY).
    other = [OffsetEvent(1, decode_row(replace(event(1), tenant_id="t2").to_json()))]
    await append_batch(db, signing_key, group="g", topic="c", partition=1, batch=other)
    result = await _write(db, signing_key, prepared)
    assert (result.as_prepared, result.appended, result.duplicates) == (False, 2, 1)
    assert [seq for seq, _ in await _chain(db)] == [1, 2]
    assert await verified(db, "t1", "t2")


# --- The worker: a batch that cannot be prepared is chained under lock, where its bad event is dead-lettered ----


@dataclass
class Message:
    offset: int
    value: bytes
    topic: str = "c"
    partition: int = 0
    key: bytes | None = b"t1"
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def _event_id_of(value: bytes) -> str:
    """The event id a poison message claims, or a stand-in where it has none that can be read."""
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        return "unreadable"
    event_id = data.get("event_id") if isinstance(data, dict) else None
    return event_id if isinstance(event_id, str) and event_id else "unreadable"


class Consumer:
    async def commit(self, offsets: object) -> None:
        return None


def _nested_attributes(depth: int) -> bytes:
    raw = json.loads(event(100).to_json())
    raw["attributes"] = "@"
    return json.dumps(raw).encode().replace(b'"@"', b'{"x": ' + b"[" * depth + b"1" + b"]" * depth + b"}")


def _with(**changes: object) -> bytes:
    raw = json.loads(event(100).to_json())
    raw.update(changes)
    return json.dumps(raw).encode()


POISON: dict[str, bytes] = {
    # Decodes, but orjson cannot write it for the hash (its recursion limit) and neither can the general path:
    # prepare() failed with TypeError and stopped the signer, and a restart met the same message again.
    "JSON too deep to hash": _nested_attributes(300),
    # These made decode_row raise decimal.InvalidOperation, OverflowError and RecursionError, which the worker
    # did not dead-letter either.
    "cost beyond a Decimal": _with(cost="1e30"),
    "event time in year 0 in UTC": _with(event_time="0001-01-01T00:00:00+01:00"),
    "JSON too deep to decode": _nested_attributes(5_000),
    # Read by the standard library, but not UTF-8: refused on decode like the event model refuses it.
    "lone surrogate": _with(model="\ud800"),
}


@pytest.mark.parametrize("poison", list(POISON.values()), ids=list(POISON))
async def test_the_worker_dead_letters_a_message_that_cannot_be_chained(
    database_url: str, signing_key: Ed25519Signer, poison: bytes
) -> None:
    pool = await create_pool(database_url)
    producer = FakeProducer()
    try:
        async with pool.acquire() as conn:
            await record_signing_key(conn, signing_key.public_key)
        worker = SignerWorker(
            Consumer(),
            producer,
            pool,
            signing_key,
            group="g",
            topic="c",
            dead_letter_topic="dlq",
            max_batch=100,
            metrics=SignerMetrics(CollectorRegistry()),
            stop=asyncio.Event(),
            keyring=canonical_keyring(),
        )
        tp = TopicPartition("c", 0)
        good = [event(n).to_json() for n in range(6)]

        def message(offset: int, value: bytes) -> Message:
            # Authenticated like the redactor's, so what is refused is the content, not the envelope.
            return Message(offset, value, headers=canonical_headers(_event_id_of(value), value))

        await worker._submit(tp, [message(i, v) for i, v in enumerate([*good[:2], poison, good[2]])])
        await worker._submit(tp, [message(4 + i, v) for i, v in enumerate(good[3:])])
        await worker.join_append()
        assert [(topic, value) for topic, _, value, _ in producer.sent] == [("dlq", poison)]
        async with pool.acquire() as conn:
            assert await _stored_offset(conn) == 7
            assert [e for _, e in await _chain(conn)] == [f"t1-ev-{n}" for n in range(6)]
            assert await verified(conn)
    finally:
        await pool.close()


class HeldSigner:
    """Signs with ``key`` once ``release`` is set, or fails then if ``fail``: signatures that come late (an append
    waits for them inside its transaction, while the worker goes on reading)."""

    def __init__(self, key: Ed25519Signer, *, fail: bool = False) -> None:
        self.key, self.fail = key, fail
        self.release = asyncio.Event()

    async def sign_many(self, digests: Sequence[bytes]) -> list[bytes]:
        await self.release.wait()
        if self.fail:
            raise SigningHelperError("the signing helper exited")
        return [self.key.sign(digest) for digest in digests]

    async def close(self) -> None:
        return None


async def _transaction_waits_for_signatures(db: asyncpg.Connection) -> None:
    """Until the append's transaction is open and waiting (for the signatures), on another connection."""
    for _ in range(500):
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND state = 'idle in transaction'")
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the append never opened its transaction")


async def test_rows_are_written_with_signatures_that_come_while_the_transaction_is_open(
    db: asyncpg.Connection, signing_key: Ed25519Signer, database_url: str
) -> None:
    await record_signing_key(db, signing_key.public_key)
    held = HeldSigner(signing_key)
    prepared = await _prepare(db, signing_key, rows(0, range(40)), {}, batch_signer=held)
    writer = await connect(database_url)
    try:
        append = asyncio.ensure_future(_write(writer, signing_key, prepared))
        await _transaction_waits_for_signatures(db)
        assert await _chain(db) == []  # nothing is visible before the signatures and the commit
        held.release.set()
        result = await append
    finally:
        await writer.close()
    assert result.as_prepared and result.appended == 40
    assert await verified(db)


async def test_signatures_that_fail_inside_the_transaction_write_nothing(
    db: asyncpg.Connection, signing_key: Ed25519Signer, database_url: str
) -> None:
    await record_signing_key(db, signing_key.public_key)
    held = HeldSigner(signing_key, fail=True)
    prepared = await _prepare(db, signing_key, rows(0, range(40)), {}, batch_signer=held)
    writer = await connect(database_url)
    try:
        append = asyncio.ensure_future(_write(writer, signing_key, prepared))
        await _transaction_waits_for_signatures(db)
        held.release.set()
        with pytest.raises(SigningHelperError):
            await append
    finally:
        await writer.close()
    for table in ("audit_logs", "audit_content", "merkle_subtrees", "signer_offsets"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
