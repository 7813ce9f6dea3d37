"""AckDeadlines (services/receiver/enqueue.py) behaves as ``asyncio.timeout_at`` does, on one shared timer."""

from __future__ import annotations

import asyncio

import pytest

from services.receiver.enqueue import AckDeadlines


async def test_a_block_past_its_deadline_gets_timeout_error_and_one_within_it_finishes() -> None:
    deadlines = AckDeadlines()
    loop = asyncio.get_running_loop()

    async def waits_forever() -> None:
        async with deadlines(loop.time() + 0.05):
            await asyncio.Event().wait()

    async def finishes() -> str:
        async with deadlines(loop.time() + 60):
            await asyncio.sleep(0)
        return "done"

    with pytest.raises(TimeoutError):
        await waits_forever()
    assert await finishes() == "done"


async def test_many_blocks_expire_in_order_and_the_rest_are_untouched() -> None:
    deadlines = AckDeadlines()
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    outcomes: dict[int, str] = {}

    async def block(index: int, timeout: float) -> None:
        try:
            async with deadlines(loop.time() + timeout):
                await release.wait()
            outcomes[index] = "finished"
        except TimeoutError:
            outcomes[index] = "timed out"

    short = [asyncio.create_task(block(index, 0.02)) for index in range(5)]
    await asyncio.gather(*short)
    long = [asyncio.create_task(block(index, 60)) for index in range(5, 10)]
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(*long)
    assert outcomes == {**dict.fromkeys(range(5), "timed out"), **dict.fromkeys(range(5, 10), "finished")}
    assert deadlines._timer is None and not deadlines._pending  # nothing left armed


async def test_a_deadline_already_past_times_out_at_the_first_wait() -> None:
    deadlines = AckDeadlines()
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        async with deadlines(loop.time() - 1):
            await asyncio.sleep(10)


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = AckDeadlines()
    loop = asyncio.get_running_loop()
    entered = asyncio.Event()

    async def block() -> None:
        async with deadlines(loop.time() + 60):
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(block())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadlines._pending


async def test_an_earlier_deadline_set_later_still_fires_first() -> None:
    deadlines = AckDeadlines()
    loop = asyncio.get_running_loop()
    never = asyncio.Event()
    entered = asyncio.Event()

    async def late() -> str:
        try:
            async with deadlines(loop.time() + 60):
                entered.set()
                await never.wait()
        except asyncio.CancelledError:
            return "cancelled by the test"
        return "finished"

    late_task = asyncio.create_task(late())
    await entered.wait()
    with pytest.raises(TimeoutError):
        async with deadlines(loop.time() + 0.02):
            await never.wait()
    late_task.cancel()
    assert await late_task == "cancelled by the test"
