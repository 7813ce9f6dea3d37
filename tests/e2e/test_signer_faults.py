"""The signer under faults, as real processes against the real broker and database:
two signers racing on the same partition, kill -9 mid-load, and PostgreSQL dropping its connections."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from shared.canonical import CanonicalEvent
from shared.db.pool import connect
from shared.kafka import TopicSpec, ensure_topics, make_producer
from shared.verify import load_key_book, verify_tenant
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline
from tests.messages_support import canonical_message

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _events(count: int, tenants: tuple[str, ...]) -> list[CanonicalEvent]:
    return [
        CanonicalEvent(
            event_id=f"ev-{i}",
            tenant_id=tenants[i % len(tenants)],
            org_id="acme",
            license_id="lic",
            plane="claude_code",
            event_type="api_request",
            event_time=T0 + timedelta(milliseconds=i),
            received_at=T0,
            session_id=f"s{i // 50}",
            event_sequence=i,
            model="claude-opus-5-5",
            tokens_used=i,
        )
        for i in range(count)
    ]


async def _produce(bootstrap: str, topic: str, events: list[CanonicalEvent]) -> None:
    producer = make_producer(bootstrap, 1_000_000)
    await producer.start()
    try:
        for event in events:
            key, value, headers = canonical_message(event)
            await producer.send(topic, value, key=key, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


async def _count(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM audit_logs")
    return count


async def _wait_rows(db: asyncpg.Connection, target: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while (rows := await _count(db)) < target and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return rows


async def _assert_exactly_once_and_verified(db: asyncpg.Connection, events: list[CanonicalEvent]) -> None:
    assert await _count(db) == len(events)
    assert await db.fetchval("SELECT count(DISTINCT event_id) FROM audit_logs") == len(events)
    book = await load_key_book(db)
    for tenant in sorted({e.tenant_id for e in events}):
        heads = await db.fetchrow(
            "SELECT count(*) AS n, max(chain_seq) AS top FROM audit_logs WHERE tenant_id = $1", tenant
        )
        assert heads["n"] == heads["top"], "a gap in the chain"
        report = await verify_tenant(db, tenant, book)
        assert report.ok, report.breaks


async def test_two_signers_on_one_partition_make_one_linear_chain(
    infra: Infra, database_url: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    topics = Topics("unused-raw", "unused-metrics", f"canonical-one-{tmp_path.name}", f"dlq-one-{tmp_path.name}")
    await ensure_topics(infra.bootstrap, [TopicSpec(topics.canonical, 1), TopicSpec(topics.dead_letter, 1)])
    events = _events(3_000, ("t-a",))
    await _produce(infra.bootstrap, topics.canonical, events)
    # Two groups: each signer believes it owns the partition, as a zombie does after a rebalance.
    first = Pipeline(database_url, infra.bootstrap, topics, tmp_path / "a", extra_env={"SIGNER_GROUP_ID": "zombie"})
    second = Pipeline(database_url, infra.bootstrap, topics, tmp_path / "b", extra_env={"SIGNER_GROUP_ID": "heir"})
    second.work_dir.mkdir()
    first.start("signer")
    second.start("signer")
    try:
        await _wait_rows(db, len(events))
        await asyncio.sleep(1)  # let the slower signer finish its view of the partition too
    finally:
        first.stop()
        second.stop()
    await _assert_exactly_once_and_verified(db, events)
    keys = await db.fetchval("SELECT count(DISTINCT signing_key_id) FROM audit_logs")
    assert keys >= 1


async def test_signer_killed_mid_load_resumes_exactly_once(
    infra: Infra, database_url: str, topics: Topics, tmp_path: Path, db: asyncpg.Connection
) -> None:
    # Enough that the kill lands mid-load even on a fast machine: the signer appends 20,000 rows/s or more.
    events = _events(20_000, ("t-a", "t-b", "t-c"))
    await _produce(infra.bootstrap, topics.canonical, events)
    pipeline = Pipeline(database_url, infra.bootstrap, topics, tmp_path, extra_env={"SIGNER_MAX_BATCH": "200"})
    pipeline.start("signer")
    try:
        assert await _wait_rows(db, 1, timeout=60) >= 1
        pipeline.kill("signer")
        killed_at = await _count(db)
        assert killed_at < len(events), "the signer finished before it could be killed; raise the load"
        pipeline.start("signer")
        await _wait_rows(db, len(events))
    finally:
        pipeline.stop()
    await _assert_exactly_once_and_verified(db, events)


async def _terminate_signer_connections(killer: asyncpg.Connection, spared_pid: int) -> None:
    await killer.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> $1",
        spared_pid,
    )


async def _wait_for_a_blocked_append(observer: asyncpg.Connection, timeout: float = 60) -> None:
    """Polled outside the locking transaction, which would see one frozen snapshot of pg_stat_activity."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = await observer.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the signer never started an append")


async def test_signer_rides_out_lost_database_connections(
    infra: Infra, database_url: str, topics: Topics, tmp_path: Path, db: asyncpg.Connection
) -> None:
    events = _events(4_000, ("t-a", "t-b"))
    pipeline = Pipeline(database_url, infra.bootstrap, topics, tmp_path, extra_env={"SIGNER_MAX_BATCH": "100"})
    pipeline.start("signer")
    killer = await connect(database_url)
    try:
        chunks = [events[i : i + 400] for i in range(0, len(events), 400)]
        await _produce(infra.bootstrap, topics.canonical, chunks[0])
        await _wait_rows(db, 1, timeout=60)
        for number, chunk in enumerate(chunks[1:]):
            # What a failover looks like from the signer: every connection dropped, mid-transaction or idle.
            # An idle pool replaces dropped connections without telling anyone, so every other chunk the drop
            # is timed to land inside an append: the table lock holds the signer's write until it is cut off.
            if number % 2:
                await _terminate_signer_connections(killer, db.get_server_pid())
                await _produce(infra.bootstrap, topics.canonical, chunk)
            else:
                async with killer.transaction():
                    await killer.execute("LOCK TABLE audit_logs IN EXCLUSIVE MODE")
                    await _produce(infra.bootstrap, topics.canonical, chunk)
                    await _wait_for_a_blocked_append(db)
                    await _terminate_signer_connections(killer, db.get_server_pid())
            await asyncio.sleep(0.2)
        await _wait_rows(db, len(events))
    finally:
        await killer.close()
        pipeline.stop()
    assert "database unavailable, retrying" in pipeline.log_of("signer")
    await _assert_exactly_once_and_verified(db, events)
