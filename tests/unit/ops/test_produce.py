"""Backpressure by rejection: a full produce step refuses a message without sending it, and the caller's loop
sends it once the broker has acknowledged the oldest one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.auditctl.ops.produce import Outbound, ProduceStep, submit_with_backpressure
from shared.pipeline import MessageRejected


class HeldProducer:
    """Sends are acknowledged only when the test releases them."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append(value)
        self.futures.append(future)
        return future


def message(n: int) -> Outbound:
    return Outbound("raw", None, str(n).encode(), [])


async def test_a_full_step_rejects_without_sending() -> None:
    producer = HeldProducer()
    step = ProduceStep(producer, max_in_flight=2)
    await step.submit(message(1))
    await step.submit(message(2))
    with pytest.raises(MessageRejected):
        await step.submit(message(3))
    assert producer.sent == [b"1", b"2"]


async def test_the_backpressure_loop_sends_after_the_oldest_is_acknowledged() -> None:
    producer = HeldProducer()
    step = ProduceStep(producer, max_in_flight=1)
    acked: list[bytes] = []
    await submit_with_backpressure(step, message(1), lambda _: acked.append(b"1"))
    waiting = asyncio.create_task(submit_with_backpressure(step, message(2), lambda _: acked.append(b"2")))
    await asyncio.sleep(0.01)
    assert not waiting.done() and producer.sent == [b"1"]
    producer.futures[0].set_result(None)
    await asyncio.wait_for(waiting, 1)
    assert producer.sent == [b"1", b"2"] and acked == [b"1"]
    producer.futures[1].set_result(None)
    await step.join(1)
    assert acked == [b"1", b"2"]
