"""Group commit: what arrives while an append is in flight, of every partition, is written by the next append in
one transaction, up to the batch cap; all of it or none of it, with every partition's offset."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Self

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from services.signer.appender import Head, append_batch, append_prepared_together, prepare
from services.signer.signing import SigningHelperError
from services.signer.worker import SignerMetrics, SignerWorker
from shared.db.pool import create_pool
from shared.enrollment import record_signing_key
from shared.kafka import make_consumer
from shared.keys import Ed25519Signer
from tests.conftest import Infra, Topics
from tests.integration.signer.test_append import event
from tests.integration.signer.test_prepared import HeldSigner, rows, verified
from tests.messages_support import canonical_headers, canonical_keyring
from tests.unit.ops.fakes import FakeProducer


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60, what: object = None) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"condition not met in time {what() if callable(what) else ''}"
        await asyncio.sleep(0.05)


class _Running:
    """A SignerWorker on a real consumer of ``topics.canonical`` from the offsets stored in PostgreSQL (0 where
    none is), signing with ``signer`` (None: with ``key`` in process). Started again on the same database, it
    starts as a signer restarted after a crash does."""

    def __init__(self, infra: Infra, topics: Topics, database_url: str, key: Ed25519Signer, signer: HeldSigner | None,
                 max_batch: int) -> None:
        self.infra, self.topics, self.database_url = infra, topics, database_url
        self.key, self.signer, self.max_batch = key, signer, max_batch
        self.stop = asyncio.Event()
        self.registry = CollectorRegistry()
        self.metrics = SignerMetrics(self.registry)

    async def __aenter__(self) -> Self:
        self.pool = await create_pool(self.database_url, min_size=1, max_size=4)
        async with self.pool.acquire() as conn:
            await record_signing_key(conn, self.key.public_key)
            # Stored offsets, so the consumer starts exactly there (a seek, not a reset to the beginning).
            await conn.executemany(
                "INSERT INTO signer_offsets (consumer_group, topic, partition, next_offset) VALUES ('g', $1, $2, 0)"
                " ON CONFLICT DO NOTHING",
                [(self.topics.canonical, partition) for partition in range(3)],
            )
        self.consumer = make_consumer(self.infra.bootstrap, f"signer-{uuid.uuid4().hex[:8]}", fetch_max_wait_ms=20)
        await self.consumer.start()
        self.worker = SignerWorker(
            self.consumer, FakeProducer(), self.pool, self.key, group="g", topic=self.topics.canonical,
            dead_letter_topic=self.topics.dead_letter, max_batch=self.max_batch, metrics=self.metrics,
            stop=self.stop, batch_signer=self.signer, keyring=canonical_keyring(),
        )
        self.worker.subscribe()
        self.task = asyncio.create_task(self.worker.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        if self.signer is not None:
            self.signer.release.set()
        try:
            await asyncio.wait_for(self.task, 20)
        except SigningHelperError:
            pass
        finally:
            await self.consumer.stop()
            await self.pool.close()

    async def counted(self, name: str, value: int) -> bool:
        return self.registry.get_sample_value(name) == value

    async def waiting(self, events: int | None = None) -> bool:
        """Whether ``events`` (by default, any) are read, prepared and waiting for the next append."""
        waiting = self.worker._pending_events
        return waiting > 0 if events is None else waiting == events

    def state(self) -> tuple[float | None, int, object]:
        return self.registry.get_sample_value("signer_messages_in_total"), self.worker._pending_events, self.worker._in_flight


async def _send(producer: AIOKafkaProducer, topic: str, partition: int, tenant: str, numbers: range) -> None:
    for n in numbers:
        value = event(n, tenant).to_json()
        headers = canonical_headers(f"{tenant}-ev-{n}", value)
        await (await producer.send(topic, value, key=tenant.encode(), partition=partition, headers=headers))


async def _rows_by_transaction(db: asyncpg.Connection) -> list[int]:
    """How many rows each transaction wrote, in commit order (rows of one transaction share its xmin)."""
    found = await db.fetch(
        "SELECT count(*) AS n FROM audit_logs GROUP BY xmin::text::bigint ORDER BY xmin::text::bigint"
    )
    return [row["n"] for row in found]


async def _offsets(db: asyncpg.Connection) -> dict[int, int]:
    found = await db.fetch("SELECT partition, next_offset FROM signer_offsets")
    return {row["partition"]: row["next_offset"] for row in found}


async def test_what_arrives_during_an_append_is_written_by_the_next_in_one_transaction_across_partitions(
    infra: Infra, topics: Topics, database_url: str, db: asyncpg.Connection, signing_key: Ed25519Signer,
    producer: AIOKafkaProducer,
) -> None:
    held = HeldSigner(signing_key)
    async with _Running(infra, topics, database_url, signing_key, held, max_batch=1_000) as running:
        await _send(producer, topics.canonical, 0, "t1", range(1))
        await _eventually(lambda: running.counted("signer_messages_in_total", 1), what=running.state)
        # The first append now waits for its signatures inside its transaction; meanwhile two partitions fill.
        await _send(producer, topics.canonical, 0, "t1", range(1, 21))
        await _send(producer, topics.canonical, 1, "t2", range(15))
        await _eventually(lambda: running.waiting(35), what=running.state)
        held.release.set()
        await _eventually(lambda: running.counted("signer_rows_appended_total", 36))
    assert await _rows_by_transaction(db) == [1, 35]
    assert await _offsets(db) == {0: 21, 1: 15, 2: 0}
    assert [r["event_id"] for r in await db.fetch(
        "SELECT event_id FROM audit_logs WHERE tenant_id = 't1' ORDER BY chain_seq")] == [f"t1-ev-{n}" for n in range(21)]
    assert await verified(db, "t1", "t2")


async def test_a_group_never_exceeds_the_batch_cap(
    infra: Infra, topics: Topics, database_url: str, db: asyncpg.Connection, signing_key: Ed25519Signer,
    producer: AIOKafkaProducer,
) -> None:
    held = HeldSigner(signing_key)
    async with _Running(infra, topics, database_url, signing_key, held, max_batch=10) as running:
        await _send(producer, topics.canonical, 0, "t1", range(1))
        await _eventually(lambda: running.counted("signer_messages_in_total", 1), what=running.state)
        await _send(producer, topics.canonical, 0, "t1", range(1, 26))
        await _eventually(lambda: running.waiting(10), what=running.state)
        held.release.set()
        await _eventually(lambda: running.counted("signer_rows_appended_total", 26))
    sizes = await _rows_by_transaction(db)
    assert sum(sizes) == 26 and max(sizes) <= 10 and sizes[0] == 1
    assert (await _offsets(db))[0] == 26
    assert await verified(db, "t1")


async def test_signatures_that_fail_inside_a_group_transaction_write_nothing_of_any_partition(
    infra: Infra, topics: Topics, database_url: str, db: asyncpg.Connection, signing_key: Ed25519Signer,
    producer: AIOKafkaProducer,
) -> None:
    held = HeldSigner(signing_key, fail=True)
    async with _Running(infra, topics, database_url, signing_key, held, max_batch=1_000) as running:
        await _send(producer, topics.canonical, 0, "t1", range(5))
        await _send(producer, topics.canonical, 1, "t2", range(5))
        await _eventually(lambda: running.counted("signer_messages_in_total", 10), what=running.state)
        await _eventually(running.waiting, what=running.state)
        held.release.set()
        with pytest.raises(SigningHelperError):
            await asyncio.wait_for(running.task, 20)
    for table in ("audit_logs", "audit_content", "merkle_subtrees", "chain_checkpoints"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    assert await _offsets(db) == {0: 0, 1: 0, 2: 0}


async def test_batches_of_two_partitions_are_written_together_with_both_offsets(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    heads: dict[str, Head] = {}
    first = await prepare(db, signing_key, rows(0, range(3)), heads)
    other = await prepare(db, signing_key, rows(0, range(4), tenant="t2"), heads, in_flight=first.event_ids)
    second = await prepare(db, signing_key, rows(3, range(3, 6)), heads, in_flight=first.event_ids | other.event_ids)
    result = await append_prepared_together(db, [(0, first), (1, other), (0, second)], group="g", topic="c")
    assert result is not None and result.as_prepared
    assert (result.appended, result.next_offsets, result.heads) == (10, {0: 6, 1: 4}, {"t1": 6, "t2": 4})
    assert await _rows_by_transaction(db) == [10]
    assert await _offsets(db) == {0: 6, 1: 4}
    assert await verified(db, "t1", "t2")


async def test_a_group_whose_chain_moved_writes_nothing_and_says_so(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    heads: dict[str, Head] = {}
    ours = await prepare(db, signing_key, rows(0, range(3)), heads)
    theirs = await prepare(db, signing_key, rows(0, range(3), tenant="t2"), heads, in_flight=ours.event_ids)
    # Another signer moves t2's head first: the whole group is refused, t1's batch included.
    await append_batch(db, signing_key, group="g", topic="c", partition=2, batch=rows(0, range(100, 101), "t2"))
    assert await append_prepared_together(db, [(0, ours), (1, theirs)], group="g", topic="c") is None
    assert await db.fetchval("SELECT count(*) FROM audit_logs WHERE tenant_id = 't1'") == 0
    assert await _offsets(db) == {2: 1}


async def test_batches_of_one_partition_that_do_not_follow_each_other_are_refused(
    db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    await record_signing_key(db, signing_key.public_key)
    heads: dict[str, Head] = {}
    first = await prepare(db, signing_key, rows(0, range(3)), heads)
    later = await prepare(db, signing_key, rows(5, range(3, 6)), heads, in_flight=first.event_ids)
    assert await append_prepared_together(db, [(0, first), (0, later)], group="g", topic="c") is None
    assert await db.fetchval("SELECT count(*) FROM audit_logs") == 0
