"""Against the real broker: records handed over together land where ``send`` would put them (Kafka's murmur2 of
the key), in their order within each partition, each with its headers; the future is done only once the broker
has acknowledged them all."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka import BatchingProducer, OutboundRecord, make_producer
from tests.conftest import Infra, Topics

Read = list[tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]]


async def _read_all(bootstrap: str, topic: str, partitions: int, count: int) -> Read:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        found: Read = []
        async with asyncio.timeout(30):
            while len(found) < count:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    found += [(m.partition, m.key, m.value, list(m.headers)) for m in messages]
        return found
    finally:
        await consumer.stop()


async def test_records_sent_together_land_where_send_puts_them_in_order(infra: Infra, topics: Topics) -> None:
    plain = make_producer(infra.bootstrap, 1_000_000)
    batching = BatchingProducer(make_producer(infra.bootstrap, 1_000_000, max_batch_size=16 * 1024, linger_ms=0))
    await plain.start()
    await batching.start()
    try:
        # Where send() puts each tenant's records: the reference.
        expected_partition = {}
        for tenant in (b"acme", b"globex", b"initech", b"umbrella"):
            metadata = await (await plain.send(topics.raw_logs, b"ref", key=tenant))
            expected_partition[tenant] = metadata.partition
        groups = []
        for round_ in range(6):  # 6 x 4 x 30 records of 1 KiB: several 16 KiB batches per partition
            records = [OutboundRecord(topics.canonical, tenant, b"%s-%03d-%03d" % (tenant, round_, i) + b"." * 1000,
                                      [("event_id", b"%d-%d" % (round_, i))])
                       for tenant in expected_partition for i in range(30)]
            groups.append(await batching.send_many(records))
        groups.append(await batching.send_many([OutboundRecord(topics.dead_letter, None, b"unkeyed", [])]))
        await asyncio.wait_for(asyncio.gather(*groups), 30)
        assert all(group.done() and group.exception() is None for group in groups)
    finally:
        await batching.stop()
        await plain.stop()

    found = await _read_all(infra.bootstrap, topics.canonical, 3, 6 * 4 * 30)
    assert len(found) == 6 * 4 * 30
    for tenant, partition in expected_partition.items():
        values = [value for p, key, value, _ in found if key == tenant]
        assert {p for p, key, _, _ in found if key == tenant} == {partition}
        assert values == sorted(values)  # per-partition order is the order handed over
        assert len(values) == 6 * 30
    assert all(headers[0][0] == "event_id" for _, _, _, headers in found)
    assert [value for _, _, value, _ in await _read_all(infra.bootstrap, topics.dead_letter, 1, 1)] == [b"unkeyed"]
