"""Starting and stopping a service's parts in order, like the OpenTelemetry Collector's Start/Shutdown.

Parts start in the order ``__main__`` names them and stop in reverse once the service's work ends, however it
ends. A part that fails to start stops the parts already started before the error propagates; a part whose
shutdown fails is logged and never keeps the others (the database pool, the producer) open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol, TypeVar

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
