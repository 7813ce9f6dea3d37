"""Batches prepared without looking up the events already stored: an event sent again is refused by the unique
event id, chained under lock where it is skipped and counted, and the lookup comes back for a while, so that a
replay pays a lookup per batch rather than a refused transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from services.signer import appender, worker
from services.signer.appender import (
    AppendResult,
    Head,
    OffsetEvent,
    PreparedBatch,
    StoredDuplicates,
    append_batch,
    append_prepared_together,
    prepare,
)
from services.signer.rows import ChainRow, decode_row
from shared.enrollment import record_signing_key
from shared.keys import Ed25519Signer
from tests.conftest import Infra, Topics
from tests.integration.signer.test_append import event
from tests.integration.signer.test_group_commit import _eventually, _offsets, _Running, _send
from tests.integration.signer.test_prepared import verified


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of event ids of each lookup of stored events, by prepare() or append_batch()."""
    made: list[int] = []
    real = appender._existing_event_ids

    async def counted(conn: asyncpg.Connection, batch: Sequence[ChainRow]) -> set[str]:
        made.append(len(batch))
        return await real(conn, batch)

    monkeypatch.setattr(appender, "_existing_event_ids", counted)
    return made


def rows(first_offset: int, events: Sequence[int]) -> list[OffsetEvent]:
    """Messages of tenant t1 from ``first_offset`` on, carrying ``events``."""
    return [OffsetEvent(first_offset + i, decode_row(event(n).to_json())) for i, n in enumerate(events)]


async def _chain(db: asyncpg.Connection) -> list[tuple[int, str]]:
    found = await db.fetch("SELECT chain_seq, event_id FROM audit_logs WHERE tenant_id = 't1' ORDER BY chain_seq")
    return [(row["chain_seq"], row["event_id"]) for row in found]


async def _write_prepared(
    db: asyncpg.Connection, key: Ed25519Signer, batch: list[OffsetEvent], heads: dict[str, Head],
    stored: StoredDuplicates,
) -> tuple[PreparedBatch, AppendResult | None]:
    prepared = await prepare(db, key, batch, heads, stored_duplicates=stored)
    result = await append_prepared_together(db, [(0, prepared)], group="g", topic="c", stored_duplicates=stored)
    return prepared, result


async def test_a_redelivered_batch_prepared_without_the_lookup_is_refused_then_skipped_and_counted(
    db: asyncpg.Connection, signing_key: Ed25519Signer, lookups: list[int]
) -> None:
    await record_signing_key(db, signing_key.public_key)
    stored = StoredDuplicates(batches=2)
    heads: dict[str, Head] = {}
    _, written = await _write_prepared(db, signing_key, rows(0, range(4)), heads, stored)
    assert written is not None and written.as_prepared and lookups == []
    # The redactor crashed before its commit and sends events 2 and 3 again, then new ones: a mixed batch.
    redelivered = rows(4, [2, 3, 4, 5, 6])
    prepared, refused = await _write_prepared(db, signing_key, redelivered, heads, stored)
    assert prepared.duplicates == 0 and lookups == []  # nothing looked up: the duplicates were chained again
    assert refused is None and stored.look_up  # the unique event id refused them, and nothing was written
    assert await _chain(db) == [(n + 1, f"t1-ev-{n}") for n in range(4)]
    assert await _offsets(db) == {0: 4}
    # The worker then chains the batch under lock, which looks them up, skips and counts them.
    result = await append_batch(db, signing_key, group="g", topic="c", partition=0, batch=redelivered,
                                stored_duplicates=stored)
    assert (result.as_prepared, result.appended, result.duplicates, result.stale) == (False, 3, 2, 0)
    assert lookups == [5]
    assert await _chain(db) == [(n + 1, f"t1-ev-{n}") for n in range(7)]
    assert await _offsets(db) == {0: 9}
    assert await db.fetchval("SELECT count(*) FROM audit_logs WHERE sequence_conflict") == 0
    assert await verified(db)
    # Prepared from the stored heads again (the worker drops its own after a batch chained under lock): with
    # the lookup now, until two batches in a row found nothing stored.
    heads = {}
    again, written = await _write_prepared(db, signing_key, rows(9, [6, 7]), heads, stored)
    assert written is not None
    assert (again.duplicates, written.as_prepared, written.appended, written.duplicates) == (1, True, 1, 1)
    for first_offset, events in ((11, [8]), (12, [9])):
        _, written = await _write_prepared(db, signing_key, rows(first_offset, events), heads, stored)
        assert written is not None and written.as_prepared
    assert lookups == [5, 2, 1, 1] and not stored.look_up
    await _write_prepared(db, signing_key, rows(13, range(10, 12)), heads, stored)
    assert lookups == [5, 2, 1, 1]
    assert await _chain(db) == [(n + 1, f"t1-ev-{n}") for n in range(12)]
    assert await _offsets(db) == {0: 15}
    assert await verified(db)


async def test_without_a_duplicates_memory_prepare_always_looks_up(
    db: asyncpg.Connection, signing_key: Ed25519Signer, lookups: list[int]
) -> None:
    await record_signing_key(db, signing_key.public_key)
    prepared = await prepare(db, signing_key, rows(0, range(3)), {})
    assert lookups == [3] and prepared.duplicates == 0


# --- The worker, on a real broker -------------------------------------------------------------------------------


@pytest.fixture
def locked_appends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of messages of each batch the worker chained under lock."""
    made: list[int] = []
    real = appender.append_batch

    async def counted(*args: Any, **kw: Any) -> Any:
        made.append(len(kw["batch"]))
        return await real(*args, **kw)

    monkeypatch.setattr(worker, "append_batch", counted)
    return made


class _Signer(_Running):
    """A SignerWorker signing in process, as _Running starts it, with the counts of what it appended and skipped."""

    def __init__(self, infra: Infra, topics: Topics, database_url: str, key: Ed25519Signer, max_batch: int) -> None:
        super().__init__(infra, topics, database_url, key, None, max_batch)

    def total(self, name: str) -> float:
        return self.registry.get_sample_value(f"signer_{name}_total") or 0.0

    async def done(self, appended: int, duplicates: int) -> None:
        async def check() -> bool:
            return (self.total("rows_appended"), self.total("duplicates_skipped")) == (appended, duplicates)

        await _eventually(check, what=lambda: (self.total("rows_appended"), self.total("duplicates_skipped")))


async def _stored_events(db: asyncpg.Connection) -> list[str]:
    return [row["event_id"] for row in await db.fetch("SELECT event_id FROM audit_logs ORDER BY tenant_id, chain_seq")]


async def test_events_sent_again_after_a_crash_are_skipped_and_counted_once(
    infra: Infra, topics: Topics, database_url: str, db: asyncpg.Connection, signing_key: Ed25519Signer,
    producer: AIOKafkaProducer, locked_appends: list[int],
) -> None:
    async with _Signer(infra, topics, database_url, signing_key, max_batch=1_000) as first:
        await _send(producer, topics.canonical, 0, "t1", range(10))
        await first.done(10, 0)
        assert not first.worker.stored_duplicates.look_up
    # The signer stops; the redactor, restarting too, sends the last five events again before new ones.
    await _send(producer, topics.canonical, 0, "t1", range(5, 15))
    async with _Signer(infra, topics, database_url, signing_key, max_batch=1_000) as second:
        assert not second.worker.stored_duplicates.look_up
        await second.done(5, 5)
        assert second.worker.stored_duplicates.look_up
    assert len(locked_appends) == 1 and 1 <= sum(locked_appends) <= 10  # the refused batch, once
    assert await _stored_events(db) == [f"t1-ev-{n}" for n in range(15)]
    assert await _offsets(db) == {0: 20, 1: 0, 2: 0}
    assert await db.fetchval("SELECT count(*) FROM audit_logs WHERE sequence_conflict") == 0
    assert await verified(db)


async def test_a_replay_of_many_batches_is_looked_up_rather_than_refused_batch_after_batch(
    infra: Infra, topics: Topics, database_url: str, db: asyncpg.Connection, signing_key: Ed25519Signer,
    producer: AIOKafkaProducer, locked_appends: list[int], lookups: list[int],
) -> None:
    async with _Signer(infra, topics, database_url, signing_key, max_batch=10) as running:
        await _send(producer, topics.canonical, 0, "t1", range(60))
        await _send(producer, topics.canonical, 1, "t2", range(60))
        await running.done(120, 0)
        assert lookups == [] and locked_appends == []
        # A replay of both partitions (twelve batches or more), then new events.
        await _send(producer, topics.canonical, 0, "t1", range(70))
        await _send(producer, topics.canonical, 1, "t2", range(60))
        await running.done(130, 120)
        assert running.worker.stored_duplicates.look_up
    # At most the append in flight when the first duplicate was met is refused and chained under lock: each of
    # its partitions once, a batch cap of messages at most. Every batch after it was looked up.
    assert len(locked_appends) <= 2 and sum(locked_appends) <= 10
    assert sum(lookups) >= 130
    assert await _stored_events(db) == [f"t1-ev-{n}" for n in range(70)] + [f"t2-ev-{n}" for n in range(60)]
    assert await _offsets(db) == {0: 130, 1: 120, 2: 0}
    assert await verified(db, "t1", "t2")
