"""BatchingProducer on a stand-in for aiokafka's producer: records go out as batches per partition in the order
handed over, a group is done only when every batch holding its records is acknowledged, a failure fails only
the groups it touches, and what does not fit a batch (unkeyed, too large) goes through ``send`` in its turn."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner

from shared.kafka import BatchingProducer, OutboundRecord


@dataclass
class FakeBatch:
    capacity: int
    max_value: int
    records: list[bytes] = field(default_factory=list)

    def append(self, *, key: bytes | None, value: bytes, timestamp: None, headers: Any) -> object | None:
        if len(self.records) >= self.capacity or len(value) > self.max_value:
            return None
        self.records.append(value)
        return object()


@dataclass
class FakeProducer:
    capacity: int = 3
    max_value: int = 10
    sent: list[tuple[str, int, list[bytes]]] = field(default_factory=list)
    acks: list[asyncio.Future[Any]] = field(default_factory=list)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity, self.max_value)

    def _ack(self) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(future)
        return future

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, batch.records))
        return self._ack()

    async def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None) -> Any:
        self.sent.append((topic, -1, [value]))
        return self._ack()


def records(key: bytes | None, *values: bytes, topic: str = "t") -> list[OutboundRecord]:
    return [OutboundRecord(topic, key, value, []) for value in values]


def partition_of(key: bytes) -> int:
    return int(DefaultPartitioner()(key, [0, 1, 2], [0, 1, 2]))


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_group_is_done_once_every_batch_with_its_records_is_acknowledged() -> None:
    fake = FakeProducer()
    producer = BatchingProducer(fake)
    first = await producer.send_many(records(b"acme", b"a1", b"a2"))
    second = await producer.send_many(records(b"acme", b"a3", b"a4", b"a5"))
    await settle()
    p = partition_of(b"acme")
    # Three to a batch: the second group spans two batches, in order.
    assert fake.sent == [("t", p, [b"a1", b"a2", b"a3"]), ("t", p, [b"a4", b"a5"])]
    fake.acks[0].set_result(None)
    await settle()
    assert first.done() and not second.done()
    fake.acks[1].set_result(None)
    await settle()
    assert second.done() and second.exception() is None


async def test_records_of_several_tenants_go_to_their_partitions() -> None:
    fake = FakeProducer(capacity=100)
    producer = BatchingProducer(fake)
    keys = [b"acme", b"globex", b"initech", b"umbrella", b"hooli"]
    group = await producer.send_many([r for key in keys for r in records(key, key[:2] + b"1", key[:2] + b"2")])
    await settle()
    for key in keys:
        values = [v for _, p, batch in fake.sent for v in batch if v.startswith(key[:2])]
        assert values == [key[:2] + b"1", key[:2] + b"2"]
        assert {p for _, p, batch in fake.sent if any(v.startswith(key[:2]) for v in batch)} == {partition_of(key)}
    for ack in fake.acks:
        ack.set_result(None)
    await settle()
    assert group.done() and group.exception() is None


async def test_a_failed_batch_fails_the_groups_in_it_and_no_other() -> None:
    fake = FakeProducer()
    producer = BatchingProducer(fake)
    first = await producer.send_many(records(b"acme", b"a1", b"a2"))
    second = await producer.send_many(records(b"acme", b"a3", b"a4"))
    await settle()
    fake.acks[0].set_exception(KafkaTimeoutError())  # a1 a2 a3
    fake.acks[1].set_result(None)  # a4
    await settle()
    assert isinstance(first.exception(), KafkaTimeoutError)
    assert isinstance(second.exception(), KafkaTimeoutError)
    third = await producer.send_many(records(b"acme", b"a5"))
    await settle()
    fake.acks[2].set_result(None)
    await settle()
    assert third.done() and third.exception() is None


async def test_unkeyed_and_oversized_records_go_through_send_in_their_turn() -> None:
    fake = FakeProducer()
    producer = BatchingProducer(fake)
    group = await producer.send_many([*records(b"acme", b"a1", b"x" * 50, b"a2"), *records(None, b"dl", topic="d")])
    await settle()
    p = partition_of(b"acme")
    # In the partition's order: the batch before the oversized record, the record alone, the batch after it.
    assert [sent for sent in fake.sent if sent[0] == "t"] == [("t", p, [b"a1"]), ("t", -1, [b"x" * 50]),
                                                             ("t", p, [b"a2"])]
    assert [sent for sent in fake.sent if sent[0] == "d"] == [("d", -1, [b"dl"])]
    for ack in fake.acks[:-1]:
        ack.set_result(None)
    await settle()
    assert not group.done()
    fake.acks[-1].set_result(None)
    await settle()
    assert group.done() and group.exception() is None


async def test_an_error_from_send_fails_the_group() -> None:
    fake = FakeProducer()

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("too large")

    fake.send = refuse  # type: ignore[method-assign]
    producer = BatchingProducer(fake)
    group = await producer.send_many(records(b"acme", b"x" * 50))
    await settle()
    with pytest.raises(ValueError, match="too large"):
        group.result()


def hold_batches(fake: FakeProducer) -> asyncio.Future[None]:
    """Batches reach the broker only once the returned future is set."""
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    original = fake.send_batch

    async def slow(batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        await gate
        return await original(batch, topic, partition=partition)

    fake.send_batch = slow  # type: ignore[method-assign]
    return gate


async def test_closing_fails_what_is_still_queued() -> None:
    fake = FakeProducer()
    hold_batches(fake)  # never released: close() finds the batches still in flight
    producer = BatchingProducer(fake)
    fake.capacity = 1
    in_batch = await producer.send_many(records(b"acme", b"a1"))
    queued = await producer.send_many(records(b"acme", b"a2"))
    await settle()
    await producer.close()
    assert isinstance(in_batch.exception(), KafkaError)
    assert isinstance(queued.exception(), KafkaError)


async def test_a_caller_waits_while_too_many_records_are_queued() -> None:
    fake = FakeProducer(capacity=2)
    gate = hold_batches(fake)
    producer = BatchingProducer(fake, max_queued=3)
    await producer.send_many(records(b"acme", b"a1", b"a2"))  # in a batch waiting at the gate
    await producer.send_many(records(b"acme", b"a3", b"a4", b"a5"))  # queued: 3, at the limit
    blocked = asyncio.ensure_future(producer.send_many(records(b"acme", b"a6")))
    await settle()
    assert not blocked.done()
    gate.set_result(None)
    await settle()
    assert blocked.done()
    await producer.close()
