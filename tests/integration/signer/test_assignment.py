"""On assignment the signer reads each partition from the offset PostgreSQL stores for it (or from the
beginning when none is stored), never from where the consumer group's Kafka commit would start it: records
the consumer fetches from there before the signer has positioned the partition are not appended."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

import asyncpg
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from services.signer.signing import InlineSigner
from services.signer.worker import SignerMetrics, SignerWorker
from shared.db.pool import create_pool
from shared.enrollment import record_signing_key
from shared.kafka import make_consumer, make_producer
from shared.keys import Ed25519Signer
from tests.conftest import Infra, Topics
from tests.integration.signer.test_append import event
from tests.integration.signer.test_prepared import verified
from tests.messages_support import canonical_headers, canonical_keyring
from tests.unit.ops.fakes import FakeProducer


class _SlowToPosition(SignerWorker):
    """Reads its stored offsets slowly (a database under load): the consumer has the partitions meanwhile."""

    async def seek_to_stored(self, partitions: Sequence[TopicPartition]) -> None:
        await asyncio.sleep(1.5)
        await super().seek_to_stored(partitions)


async def _commit_in_kafka(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> None:
    """The group's Kafka commit, as a signer's lag-monitoring commit (or an operator's reset) leaves it."""
    consumer = make_consumer(bootstrap, group)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


async def test_records_fetched_before_the_partition_is_positioned_are_not_appended(
    infra: Infra, topics: Topics, database_url: str, db: asyncpg.Connection, signing_key: Ed25519Signer
) -> None:
    producer = make_producer(infra.bootstrap, 1_000_000)
    await producer.start()
    try:
        for n in range(10):
            value = event(n).to_json()
            await (await producer.send(topics.canonical, value, key=b"t1", partition=0,
                                       headers=canonical_headers(f"t1-ev-{n}", value)))
    finally:
        await producer.stop()
    kafka_group = f"signer-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(topics.canonical, 0)
    # Kafka says 5; PostgreSQL stores nothing for the partition (a database restored from before its first row):
    # the signer must start from the beginning, and events 0 to 4 must not be skipped.
    await _commit_in_kafka(infra.bootstrap, kafka_group, tp, 5)
    await record_signing_key(db, signing_key.public_key)
    pool = await create_pool(database_url, min_size=1, max_size=4)
    consumer = make_consumer(infra.bootstrap, kafka_group, fetch_max_wait_ms=20)
    await consumer.start()
    stop = asyncio.Event()
    registry = CollectorRegistry()
    worker = _SlowToPosition(
        consumer, FakeProducer(), pool, signing_key, group="g", topic=topics.canonical,
        dead_letter_topic=topics.dead_letter, max_batch=100, metrics=SignerMetrics(registry), stop=stop,
        batch_signer=InlineSigner(signing_key), keyring=canonical_keyring(),
    )
    worker.subscribe()
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 60
        while await db.fetchval("SELECT next_offset FROM signer_offsets WHERE partition = 0") != 10:
            assert time.monotonic() < deadline, "the signer did not reach the end of the partition"
            assert not task.done(), task
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await consumer.stop()
        await pool.close()
    chained = [r["event_id"] for r in await db.fetch("SELECT event_id FROM audit_logs ORDER BY chain_seq")]
    assert chained == [f"t1-ev-{n}" for n in range(10)]
    assert await verified(db)
