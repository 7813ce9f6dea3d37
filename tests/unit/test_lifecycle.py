"""Parts start in order and stop in reverse; a failed start stops what had started; a failed stop is logged
and the other parts still stop. A part built on a thread while the consumer joins starts once the join is out."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from shared.lifecycle import BuildWhileJoining, Lifecycle

LOG = logging.getLogger("test-lifecycle")


class Part:
    def __init__(self, name: str, events: list[str], *, fail_start: bool = False, fail_stop: bool = False) -> None:
        self.name, self.events, self.fail_start, self.fail_stop = name, events, fail_start, fail_stop

    async def start(self) -> str:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.events.append(f"start {self.name}")
        return self.name

    async def stop(self) -> None:
        self.events.append(f"stop {self.name}")
        if self.fail_stop:
            raise RuntimeError(f"{self.name} cannot stop")


async def test_parts_stop_in_reverse_order_of_starting() -> None:
    events: list[str] = []
    parts = [Part(n, events) for n in ("pool", "health", "clients")]
    async with Lifecycle("svc", LOG) as life:
        for part in parts:
            assert await life.start(part.name, part.start, part.stop) == part.name
        events.append("work")
    assert events == ["start pool", "start health", "start clients", "work",
                      "stop clients", "stop health", "stop pool"]


async def test_a_failed_start_stops_what_had_started_and_propagates() -> None:
    events: list[str] = []
    pool, clients = Part("pool", events), Part("clients", events, fail_start=True)
    with pytest.raises(RuntimeError, match="clients cannot start"):
        async with Lifecycle("svc", LOG) as life:
            await life.start("pool", pool.start, pool.stop)
            await life.start("clients", clients.start, clients.stop)
            events.append("never")
    assert events == ["start pool", "stop pool"]


async def test_a_failed_stop_is_logged_and_the_others_still_stop(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    pool, producer = Part("pool", events), Part("producer", events, fail_stop=True)
    async with Lifecycle("svc", LOG) as life:
        life.on_shutdown("pool", pool.stop)
        life.on_shutdown("producer", producer.stop)
    assert events == ["stop producer", "stop pool"]
    assert any(getattr(r, "part", None) == "producer" for r in caplog.records)


async def test_an_error_in_the_work_still_stops_every_part() -> None:
    events: list[str] = []
    pool = Part("pool", events)
    with pytest.raises(ValueError, match="work failed"):
        async with Lifecycle("svc", LOG) as life:
            await life.start("pool", pool.start, pool.stop)
            raise ValueError("work failed")
    assert events == ["start pool", "stop pool"]


async def test_a_part_built_while_joining_starts_once_the_join_is_out() -> None:
    started = threading.Event()

    def engine() -> str:
        started.set()
        return "engine"

    build = BuildWhileJoining("svc", "the engine", engine, asyncio.Event(), at_the_latest=30)
    await asyncio.sleep(0.05)
    assert not started.is_set() and not build.ready()
    build.joining.set()
    assert await build.result() == "engine"
    assert started.is_set() and build.ready()


async def test_a_part_built_while_joining_does_not_wait_for_a_broker_that_does_not_answer() -> None:
    build = BuildWhileJoining("svc", "the engine", lambda: "engine", asyncio.Event(), at_the_latest=0.01)
    assert await build.result() == "engine"  # joining never set


async def test_a_part_that_cannot_be_built_stops_the_service_and_is_named() -> None:
    def fail() -> str:
        raise ValueError("no such model")

    stop = asyncio.Event()
    build = BuildWhileJoining("svc", "the engine", fail, stop, at_the_latest=0)
    with pytest.raises(SystemExit, match="svc: cannot build the engine: no such model"):
        await build.result()
    assert stop.is_set()  # a start still waiting for the broker ends
    assert build.done() and not build.ready()
