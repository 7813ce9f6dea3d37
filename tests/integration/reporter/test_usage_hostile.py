"""The metrics consumer on a raw metrics topic that a broker-level writer also writes: hostile messages
(seeded; ``AUDIT_FUZZ_MESSAGES`` for a longer run) between good ones are dead-lettered once each with a
reason, every good batch's points are stored, nothing lands under another tenant, and the worker keeps going."""

from __future__ import annotations

import uuid

import asyncpg

from tests.conftest import Infra, Topics
from tests.fuzz_support import COUNT, good_raw, hostile_raw, rng
from tests.integration.reporter.test_usage_consumer import RunningWorker, committed, eventually, produce
from tests.unit.reporter.metric_payloads import export

TENANT = "tenant-a"


async def test_hostile_metric_batches_between_good_ones_are_dead_lettered_and_the_good_ones_stored(
        infra: Infra, topics: Topics, database_url: str, db: asyncpg.Connection) -> None:
    r = rng()
    messages: list[tuple[bytes | None, list[tuple[str, bytes]]]] = []
    for index in range(COUNT):
        body = export("claude_code.commit.count", [(0, 10 + index, 1)], cumulative=False,
                      session=f"fuzz-{index}").SerializeToString()
        _, value, headers = good_raw(body, "metrics", TENANT, f"good-{index}")
        messages.append((value or b"", headers))
        _, value, headers = hostile_raw(r, body, "metrics", TENANT)
        messages.append((value, headers))  # None: a tombstone
    await produce(infra, topics.raw_metrics, messages)
    group = f"usage-{uuid.uuid4().hex[:8]}"
    running = RunningWorker(infra, topics, database_url, group)
    async with running as worker:

        async def all_committed() -> bool:
            return await committed(worker.consumer, topics.raw_metrics) == len(messages)

        await eventually(all_committed, timeout=60)
        assert worker.metrics.dead_lettered._value.get() == COUNT  # each hostile one once, the offsets moved on
        assert not running.task.done()  # still running
    points = await db.fetch("SELECT tenant_id, session_id FROM usage_points")
    assert {p["tenant_id"] for p in points} == {TENANT}
    assert sorted(p["session_id"] for p in points) == sorted(f"fuzz-{i}" for i in range(COUNT))
