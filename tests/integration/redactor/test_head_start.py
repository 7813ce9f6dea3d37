"""A restarted redactor's head start (services/redactor/head_start.py) on a real broker: what it transformed ahead
of the assignment is produced and committed once, in order, and only where the committed offset is still its start."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry

from services.redactor.head_start import HeadStart, Keep
from services.redactor.worker import RedactorMetrics, RedactorWorker, TransformStep
from shared.kafka import BatchingProducer, make_consumer, make_producer
from shared.messages import dead_letter
from tests.conftest import Infra, Topics
from tests.messages_support import canonical_key, raw_keyring

PER_PARTITION = 6
PARTITIONS = 3
MAX_MESSAGE_BYTES = 1 << 20


def _head_start(infra: Infra, topics: Topics, group: str) -> HeadStart:
    def make_transform(keep: Keep) -> TransformStep:
        # No engines or policy: the messages are no raw batches and never get that far.
        return TransformStep(None, None, topics.canonical, topics.dead_letter, keep,  # type: ignore[arg-type]
                             RedactorMetrics(CollectorRegistry()), raw_keyring=raw_keyring(),
                             canonical_key=canonical_key(), max_message_bytes=MAX_MESSAGE_BYTES)

    return HeadStart(make_consumer(infra.bootstrap, group, fetch_max_wait_ms=20), make_transform, topics.raw_logs,
                     max_bytes=1 << 26)


async def _scene(infra: Infra, topics: Topics, group: str, committed: int) -> None:
    """Raw messages that are no raw batches (each becomes one dead letter, an output like any other) on every
    partition, and a group that committed ``committed`` on each, as a killed redactor would have."""
    producer = make_producer(infra.bootstrap, MAX_MESSAGE_BYTES)
    await producer.start()
    try:
        for partition in range(PARTITIONS):
            for offset in range(PER_PARTITION):
                await producer.send(topics.raw_logs, f"not a raw batch {partition}/{offset}".encode(),
                                    partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    committer = make_consumer(infra.bootstrap, group)
    await committer.start()
    try:
        tps = [TopicPartition(topics.raw_logs, p) for p in range(PARTITIONS)]
        committer.assign(tps)
        await committer.commit({tp: OffsetAndMetadata(committed, "") for tp in tps})
    finally:
        await committer.stop()


async def _dead_letters(infra: Infra, topics: Topics, expected: int) -> Counter[tuple[int, int]]:
    consumer = AIOKafkaConsumer(topics.dead_letter, bootstrap_servers=infra.bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    found: Counter[tuple[int, int]] = Counter()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while sum(found.values()) < expected and loop.time() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                for message in messages:
                    context = dead_letter.decode(message.headers)
                    found[(context.source_partition, context.source_offset)] += 1
        await asyncio.sleep(0.5)  # anything produced twice would be here by now
        for messages in (await consumer.getmany(timeout_ms=200)).values():
            for message in messages:
                context = dead_letter.decode(message.headers)
                found[(context.source_partition, context.source_offset)] += 1
    finally:
        await consumer.stop()
    return found


async def _run_worker(infra: Infra, topics: Topics, group: str, head_start: HeadStart,
                      metrics: RedactorMetrics) -> dict[TopicPartition, int]:
    consumer = make_consumer(infra.bootstrap, group)
    producer = BatchingProducer(make_producer(infra.bootstrap, MAX_MESSAGE_BYTES, linger_ms=0))
    worker = RedactorWorker(consumer, producer, None, None, raw_topic=topics.raw_logs,  # type: ignore[arg-type]
                            canonical_topic=topics.canonical, dead_letter_topic=topics.dead_letter, max_pending=100,
                            metrics=metrics, raw_keyring=raw_keyring(), canonical_key=canonical_key(),
                            max_message_bytes=MAX_MESSAGE_BYTES)
    worker.commit._interval = 0.0
    worker.head_start = head_start
    await producer.start()
    await consumer.start()
    worker.subscribe()
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        end = {TopicPartition(topics.raw_logs, p): PER_PARTITION for p in range(PARTITIONS)}
        while worker.commit.committed != end and loop.time() < deadline and not run.done():
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await run
        await consumer.stop()
        await producer.stop()
    return dict(worker.commit.committed)


async def _wait_transformed(head_start: HeadStart, count: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while head_start.messages < count and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert head_start.messages == count


async def test_what_was_transformed_ahead_is_produced_and_committed_once(
    infra: Infra, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    group = f"head-start-{topics.raw_logs}"
    await _scene(infra, topics, group, committed=2)
    head_start = _head_start(infra, topics, group)
    head_start.start()
    await _wait_transformed(head_start, PARTITIONS * (PER_PARTITION - 2))
    metrics = RedactorMetrics(CollectorRegistry())
    with caplog.at_level(logging.INFO, logger="redactor"):
        committed = await _run_worker(infra, topics, group, head_start, metrics)
    assert committed == {TopicPartition(topics.raw_logs, p): PER_PARTITION for p in range(PARTITIONS)}
    taken = [r for r in caplog.records if r.getMessage() == "head start taken over"]
    assert [r.__dict__["raw_messages"] for r in taken] == [PARTITIONS * (PER_PARTITION - 2)]
    # Everything after the committed offsets, once each: nothing before them, nothing twice.
    found = await _dead_letters(infra, topics, PARTITIONS * (PER_PARTITION - 2))
    assert found == Counter({(p, o): 1 for p in range(PARTITIONS) for o in range(2, PER_PARTITION)})
    # Counted once handed over, like messages the worker transformed itself.
    assert metrics.dead_lettered._value.get() == PARTITIONS * (PER_PARTITION - 2)


async def test_a_partition_whose_offset_moved_meanwhile_is_done_again_not_taken_over(
    infra: Infra, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    group = f"head-start-{topics.raw_logs}"
    await _scene(infra, topics, group, committed=2)
    head_start = _head_start(infra, topics, group)
    head_start.start()
    await _wait_transformed(head_start, PARTITIONS * (PER_PARTITION - 2))
    # Another instance works on partition 0 meanwhile (and does not finish it): what was transformed ahead from
    # offset 2 would start behind the group's offset there.
    committer = make_consumer(infra.bootstrap, group)
    await committer.start()
    try:
        moved = TopicPartition(topics.raw_logs, 0)
        committer.assign([moved])
        await committer.commit({moved: OffsetAndMetadata(4, "")})
    finally:
        await committer.stop()
    with caplog.at_level(logging.INFO, logger="redactor"):
        await _run_worker(infra, topics, group, head_start, RedactorMetrics(CollectorRegistry()))
    taken = [r for r in caplog.records if r.getMessage() == "head start taken over"]
    assert [r.__dict__["raw_messages"] for r in taken] == [(PARTITIONS - 1) * (PER_PARTITION - 2)]
    found = await _dead_letters(infra, topics, (PARTITIONS - 1) * (PER_PARTITION - 2) + 2)
    assert found == Counter({(p, o): 1 for p in range(PARTITIONS) for o in range(4 if p == 0 else 2, PER_PARTITION)})


async def test_the_head_start_leaves_partitions_another_instance_commits_on(infra: Infra, topics: Topics) -> None:
    group = f"head-start-{topics.raw_logs}"
    await _scene(infra, topics, group, committed=0)
    head_start = _head_start(infra, topics, group)
    head_start.start()
    await _wait_transformed(head_start, PARTITIONS * PER_PARTITION)
    committer = make_consumer(infra.bootstrap, group)
    await committer.start()
    try:
        moved = TopicPartition(topics.raw_logs, 1)
        committer.assign([moved])
        await committer.commit({moved: OffsetAndMetadata(3, "")})
    finally:
        await committer.stop()
    await asyncio.sleep(1.5)  # at least one look at the committed offsets
    await head_start.finish()
    assert head_start.take(moved, 3) == []
    assert len(head_start.take(TopicPartition(topics.raw_logs, 2), 0)) == PER_PARTITION
