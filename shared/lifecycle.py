"""Starting and stopping a service's parts in order, like the OpenTelemetry Collector's Start/Shutdown.

Parts start in the order ``__main__`` names them and stop in reverse once the service's work ends, however it
ends. A part that fails to start stops the parts already started before the error propagates; a part whose
shutdown fails is logged and never keeps the others (the database pool, the producer) open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from shared.kafka import KafkaConfigError, KafkaConnection, start_clients

T = TypeVar("T")

Stop = Callable[[], Awaitable[object]]


class KafkaClient(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Lifecycle:
    def __init__(self, service: str, log: logging.Logger) -> None:
        self._service = service
        self._log = log
        self._running: list[tuple[str, Stop]] = []

    async def start(self, part: str, start: Callable[[], Awaitable[T]], stop: Stop | None = None) -> T:
        """Starts ``part``; ``stop`` runs at shutdown only if the start returned."""
        started = await start()
        if stop is not None:
            self._running.append((part, stop))
        return started

    def on_shutdown(self, part: str, stop: Stop) -> None:
        """A part that is already running (built before the lifecycle, or started by one call for several)."""
        self._running.append((part, stop))

    async def start_kafka_clients(self, producer: KafkaClient, consumer: KafkaClient, *, stop: asyncio.Event,
                                  kafka: KafkaConnection) -> None:
        """Starts the producer, then the consumer, waiting out a broker that is not up yet, and stops both at
        shutdown. Kafka settings that cannot work (an untrusted broker certificate, refused credentials) end the
        service with the reason under its name; a stop asked for before the broker answered ends it quietly."""
        try:
            started = await start_clients(producer, consumer, stop=stop, kafka=kafka)
        except KafkaConfigError as exc:
            raise SystemExit(f"{self._service}: {exc}") from None
        if not started:
            raise SystemExit(0)
        self.on_shutdown("producer", producer.stop)
        self.on_shutdown("consumer", consumer.stop)

    async def shutdown(self) -> None:
        while self._running:
            part, stop = self._running.pop()
            try:
                await stop()
            except Exception as exc:  # one part's failure must not keep the rest open
                self._log.warning("stopping a part failed",
                                  extra={"service": self._service, "part": part, "error": repr(exc)})

    async def __aenter__(self) -> Lifecycle:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.shutdown()


class BuildWhileJoining(Generic[T]):
    """A part that takes seconds of CPU to build (the PII engine: spaCy's imports, the NER model, the name gazetteer),
    built on a thread while the consumer joins its group, so that a restart waits for the longer of the two, not for
    both. It is built at start-up, so that a bad setting stops the service there.

    The build starts once the consumer's join request is out (``joining`` set), so that it does not slow the Kafka
    clients' start, or ``at_the_latest`` seconds after it was created if the broker has not answered by then: a bad
    setting still stops the service while the broker is away (``stop`` is set when the build fails, ending a start
    that waits for the broker; ``result`` then names the error).
    """

    def __init__(self, service: str, what: str, build: Callable[[], T], stop: asyncio.Event, *,
                 at_the_latest: float = 1.0) -> None:
        self._service = service
        self._what = what
        self.joining = asyncio.Event()
        self._task = asyncio.ensure_future(self._build(build, at_the_latest))

        def stop_if_the_build_failed(task: asyncio.Future[T]) -> None:
            if not task.cancelled() and task.exception() is not None:
                stop.set()

        self._task.add_done_callback(stop_if_the_build_failed)

    async def _build(self, build: Callable[[], T], at_the_latest: float) -> T:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.joining.wait(), at_the_latest)
        return await asyncio.to_thread(build)

    def done(self) -> bool:
        return self._task.done()

    def ready(self) -> bool:
        """Built, without error (readiness)."""
        return self._task.done() and not self._task.cancelled() and self._task.exception() is None

    async def result(self) -> T:
        """The part, once built; a setting that cannot work (ValueError, OSError) ends the service, named."""
        try:
            return await self._task
        except (ValueError, OSError) as exc:
            raise SystemExit(f"{self._service}: cannot build {self._what}: {exc}") from None
