"""The produce step the operator tools share: a bounded number of unacknowledged sends, each counted only
once the broker has acknowledged it, failed sends retried with jittered backoff. When full it rejects
(``MessageRejected``) rather than waiting; ``submit_with_backpressure`` is the caller's loop for that."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from shared.kafka import Headers, MessageProducer
from shared.pipeline import Backoff, MessageRejected

log = logging.getLogger("ops")

# Per-message bytes beyond key, value and headers (record batch header and varints), as the receiver counts.
_MESSAGE_OVERHEAD = 128
_HEADER_FRAMING = 10


@dataclass(frozen=True)
class Outbound:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers


@dataclass
class _Pending:
    message: Outbound
    future: asyncio.Future[Any]
    on_acked: Callable[[Any], None] | None
    attempts: int = 1


def message_size(key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]) -> int:
    return (_MESSAGE_OVERHEAD + len(key or b"") + len(value)
            + sum(len(k) + len(v) + _HEADER_FRAMING for k, v in headers))


def annotate(original: Sequence[tuple[str, bytes]], added: Headers, *, drop_prefixes: tuple[str, ...],
             key: bytes | None, value: bytes, max_message_bytes: int) -> Headers:
    """The original headers without earlier tool annotations, plus ``added`` when the message still fits.

    The added headers only say where a message came from; a message that was at the size limit already is
    sent without them rather than refused by the broker.
    """
    kept = [(k, v) for k, v in original if not k.startswith(drop_prefixes)]
    if message_size(key, value, kept + added) <= max_message_bytes:
        return kept + added
    log.warning("message at the size limit; sent without provenance headers", extra={"bytes": len(value)})
    return kept


@dataclass
class ProduceStep:
    producer: MessageProducer
    max_in_flight: int
    max_attempts: int = 8
    _pending: deque[_Pending] = field(default_factory=deque)

    async def submit(self, message: Outbound, on_acked: Callable[[Any], None] | None = None) -> None:
        """Sends ``message``; while ``max_in_flight`` sends are unacknowledged, raises ``MessageRejected`` instead."""
        if len(self._pending) >= self.max_in_flight:
            raise MessageRejected(f"{len(self._pending)} sends unacknowledged")
        self._pending.append(_Pending(message, await self._send(message), on_acked))

    async def wait_for_room(self) -> None:
        """Waits for the oldest send to settle and polls, which acknowledges or resends it."""
        if self._pending:
            await asyncio.wait([self._pending[0].future])
        await self.poll()

    async def _send(self, message: Outbound) -> asyncio.Future[Any]:
        return await self.producer.send(message.topic, message.value, key=message.key, headers=message.headers)

    async def poll(self) -> None:
        """Acknowledge what is done, in order; resend a failed head (retryable) until attempts run out."""
        backoff = Backoff(0.2, 5.0)
        while self._pending and self._pending[0].future.done():
            head = self._pending[0]
            error = None if head.future.cancelled() else head.future.exception()
            if head.future.cancelled() or error is not None:
                if isinstance(error, MessageSizeTooLargeError) or head.attempts >= self.max_attempts:
                    raise RuntimeError(f"cannot produce to {head.message.topic}: {error!r}") from error
                log.warning("produce failed, resending", extra={"topic": head.message.topic, "error": repr(error)})
                await backoff.sleep()
                head.attempts += 1
                head.future = await self._send(head.message)
                continue
            backoff.reset()
            self._pending.popleft()
            if head.on_acked is not None:
                head.on_acked(head.future.result())

    async def join(self, timeout: float | None = None) -> None:
        async def drain() -> None:
            while self._pending:
                await asyncio.wait([self._pending[0].future])
                await self.poll()

        await asyncio.wait_for(drain(), timeout)

    async def send_and_wait(self, message: Outbound) -> Any:
        """One acknowledged send (for markers that must follow their message), retried like the others."""
        backoff = Backoff(0.2, 5.0)
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await (await self._send(message))
            except MessageSizeTooLargeError:
                raise
            except KafkaError as exc:
                if attempt == self.max_attempts:
                    raise
                log.warning("produce failed, resending", extra={"topic": message.topic, "error": repr(exc)})
                await backoff.sleep()
        raise AssertionError("unreachable")


async def submit_with_backpressure(step: ProduceStep, message: Outbound,
                                   on_acked: Callable[[Any], None] | None = None) -> None:
    """Submits, making room each time the step rejects: the tools read their input no faster than the broker
    acknowledges."""
    while True:
        try:
            await step.submit(message, on_acked)
        except MessageRejected:
            await step.wait_for_room()
        else:
            return
