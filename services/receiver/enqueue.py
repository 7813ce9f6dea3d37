"""The receiver's side of the raw topics: a producer it owns, and sends that count only once acknowledged.

The producer sends with ``acks=all`` and is not idempotent, so a retried request can land twice; every
stage downstream dedupes. Tenancy in the headers comes from the licence alone, and every batch is
authenticated (``shared.messages.raw_batch``) so that only the receiver can write a tenant's batches.

Broker outages are detected by failed or timed-out sends. While the broker is known to be down, one
request per probe interval is let through to try it and every other request is answered 503 at once,
so an outage costs neither memory (no sends pile up in the producer) nor client time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from services.receiver.limits import Reservation
from shared.clock import Clock
from shared.kafka import Headers, MessageProducer, tenant_key
from shared.messages import raw_batch
from shared.messages.auth import MessageKey

log = logging.getLogger("receiver")

# Per-message bytes beyond key, value and headers: the record batch header (61) and the record's own
# varints (at most 5 x 5), rounded up; keeps every message under max.message.bytes whatever the headers.
_BATCH_AND_RECORD_OVERHEAD = 128
_HEADER_FRAMING = 10  # varints for a header's key and value lengths


class ManagedProducer(MessageProducer, Protocol):
    """A producer the lifespan starts and stops; aiokafka's AIOKafkaProducer is one."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ProducerFactory = Callable[[], ManagedProducer]


class BrokerUnavailable(Exception):
    pass


@dataclass(frozen=True)
class BatchOrigin:
    """Who a batch belongs to: taken from the verified licence, never from the telemetry."""

    tenant_id: str
    org_id: str
    license_id: str


@dataclass(frozen=True)
class OutgoingMessage:
    payload: bytes
    content_type: str
    record_count: int


class BrokerBreaker:
    """Remembers that the broker is down and rations the requests that may try it."""

    def __init__(self, clock: Clock, probe_interval: float) -> None:
        self._clock = clock
        self._probe_interval = probe_interval
        self._down = False
        self._next_probe_at = 0.0

    @property
    def available(self) -> bool:
        return not self._down

    def allow(self) -> bool:
        if not self._down:
            return True
        now = self._clock.monotonic()
        if now >= self._next_probe_at:
            self._next_probe_at = now + self._probe_interval
            return True
        return False

    def succeeded(self) -> None:
        if self._down:
            log.info("broker acknowledges sends again")
        self._down = False

    def failed(self) -> None:
        if not self._down:
            log.warning("broker did not acknowledge; answering 503 until a probe succeeds")
            self._down = True
            self._next_probe_at = self._clock.monotonic() + self._probe_interval


class AckDeadlines:
    """``asyncio.timeout_at`` for the enqueues, every one of which has the same timeout, on one shared timer.

    ``asyncio.timeout_at`` arms and cancels an event-loop timer per request (a few percent of the
    receiver's CPU). Here each enqueue's deadline joins a queue: deadlines come in the order they were set,
    so the earliest pending one is always at its head and one timer, armed for it, is enough. When it fires,
    every enqueue past its deadline is cancelled and, on leaving the block, gets TimeoutError, as with
    ``asyncio.timeout_at`` (a cancellation from elsewhere stays a cancellation).
    """

    def __init__(self) -> None:
        self._pending: collections.deque[_Deadline] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, when: float, loop: asyncio.AbstractEventLoop | None = None) -> _Deadline:
        return _Deadline(self, when, loop)

    def _enter(self, deadline: _Deadline) -> None:
        pending = self._pending
        if not pending or pending[-1].when <= deadline.when:
            pending.append(deadline)
        else:  # not for the enqueues (one timeout, a monotonic clock), but kept in order all the same
            index = len(pending)
            while index and pending[index - 1].when > deadline.when:
                index -= 1
            pending.insert(index, deadline)
        if self._timer is None or pending[0] is deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = deadline.loop.call_at(pending[0].when, self._expire)

    def _leave(self) -> None:
        pending = self._pending
        while pending and pending[0].done:
            pending.popleft()
        if not pending and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        pending = self._pending
        while pending and (pending[0].done or pending[0].when <= pending[0].loop.time()):
            deadline = pending.popleft()
            if not deadline.done:
                deadline.expire()
        if pending:
            self._timer = pending[0].loop.call_at(pending[0].when, self._expire)


class _Deadline:
    """One enqueue's block under an AckDeadlines deadline."""

    __slots__ = ("_cancelling", "_deadlines", "_expired", "_task", "done", "loop", "when")

    def __init__(self, deadlines: AckDeadlines, when: float, loop: asyncio.AbstractEventLoop | None) -> None:
        self._deadlines = deadlines
        self.when = when
        self.loop = loop or asyncio.get_running_loop()
        self.done = False
        self._expired = False
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0

    def expire(self) -> None:
        self.done = self._expired = True
        assert self._task is not None
        self._task.cancel()

    async def __aenter__(self) -> _Deadline:
        task = asyncio.current_task(self.loop)  # given the loop: no second look-up (a getpid() call each)
        if task is None:
            raise RuntimeError("a deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._deadlines._enter(self)
        if self.when <= self.loop.time():
            self._deadlines._expire()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: object) -> None:
        self.done = True
        self._deadlines._leave()
        if self._expired and self._task is not None and self._task.uncancel() <= self._cancelling \
                and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc


class RawBatchQueue:
    """Owns the producer (started by the lifespan, retried until the broker answers) and the breaker."""

    def __init__(
        self,
        factory: ProducerFactory,
        clock: Clock,
        *,
        max_message_bytes: int,
        ack_timeout: float,
        probe_interval: float,
        key: MessageKey,
    ) -> None:
        self._factory = factory
        self._key = key
        self._max_message_bytes = max_message_bytes
        self._ack_timeout = ack_timeout
        self.breaker = BrokerBreaker(clock, probe_interval)
        self.producer: ManagedProducer | None = None
        self._payload_limits: dict[BatchOrigin, int] = {}
        self._deadlines = AckDeadlines()

    @property
    def ready(self) -> bool:
        return self.producer is not None and self.breaker.available

    async def connect(self, stop: asyncio.Event) -> None:
        """Start the producer, retrying with backoff; the receiver answers 503 until it is up."""
        delay = 0.25
        while not stop.is_set():
            producer = self._factory()
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                log.warning("broker not reachable yet, retrying", extra={"error": repr(exc)})
                with contextlib.suppress(Exception):
                    await producer.stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 5.0)
                continue
            self.producer = producer
            return

    async def close(self, timeout: float = 5.0) -> None:
        """Flush and stop the producer. Runs after the server has answered every request, so whatever is
        still unacknowledged then belongs to requests already answered 503 (their clients retry); with the
        broker gone, waiting for those sends to expire would only delay the exit."""
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), timeout)
            except TimeoutError:
                log.warning("producer did not stop in time; unacknowledged sends were already answered 503")

    def admit(self) -> None:
        """Fail fast, before a body is read, when sending cannot work now."""
        if self.producer is None:
            raise BrokerUnavailable("the queue is not reachable yet")
        if not self.breaker.allow():
            raise BrokerUnavailable("the queue is unavailable")

    def payload_limit(self, origin: BatchOrigin) -> int:
        """The largest payload whose message (key, headers and framing included) stays under the limit."""
        limit = self._payload_limits.get(origin)
        if limit is None:
            if len(self._payload_limits) >= 10_000:
                self._payload_limits.clear()
            limit = self._payload_limits[origin] = self._compute_payload_limit(origin)
        return limit

    def _compute_payload_limit(self, origin: BatchOrigin) -> int:
        headers = self._headers(origin, "logs", b"", "application/x-protobuf", raw_batch.MAX_RECEIVED_AT_NS,
                                "f" * 32, (raw_batch.MAX_RECORD_COUNT, 9_999, 9_999))
        framing = _BATCH_AND_RECORD_OVERHEAD + len(tenant_key(origin.tenant_id))
        framing += sum(len(key) + len(value) + _HEADER_FRAMING for key, value in headers)
        return self._max_message_bytes - framing

    async def enqueue(
        self,
        topic: str,
        kind: raw_batch.Kind,
        messages: Sequence[OutgoingMessage],
        origin: BatchOrigin,
        *,
        request_id: str,
        received_at_ns: int,
        reservation: Reservation,
    ) -> None:
        """Send every message and wait for the broker's acknowledgement of all of them.

        Raises BrokerUnavailable on failure or timeout; the reservation is then released only when the
        producer is done with the payloads. On success it is left to the caller.
        """
        producer = self.producer
        if producer is None:
            raise BrokerUnavailable("the queue is not reachable")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ack_timeout
        key = tenant_key(origin.tenant_id)
        acks: list[asyncio.Future[Any]] = []
        try:
            # One deadline for sending and acknowledgement alike.
            async with self._deadlines(deadline, loop):
                for index, message in enumerate(messages, start=1):
                    headers = self._headers(origin, kind, message.payload, message.content_type, received_at_ns,
                                            request_id, (message.record_count, index, len(messages)))
                    acks.append(await producer.send(topic, message.payload, key=key, headers=headers))
                await _all_done(acks, loop)
            failure = _first_failure(acks)
        except TimeoutError:
            failure = "timeout"
        except (KafkaError, OSError) as exc:
            failure = repr(exc)
        if failure is None:
            self.breaker.succeeded()
            return
        self.breaker.failed()
        for ack in acks:
            ack.add_done_callback(_consume_outcome)
        reservation.release_when_done(acks)
        log.warning("enqueue failed", extra={"request_id": request_id, "error": failure})
        raise BrokerUnavailable("the queue did not acknowledge the batch")

    def _headers(self, origin: BatchOrigin, kind: raw_batch.Kind, payload: bytes, content_type: str,
                 received_at_ns: int, request_id: str, counts: tuple[int, int, int]) -> Headers:
        record_count, index, total = counts
        batch = raw_batch.RawBatch(origin.tenant_id, origin.org_id, origin.license_id, content_type, received_at_ns,
                                   request_id, record_count, index, total, payload)
        return raw_batch.encode(batch, self._key, kind)


class CachingPartitioner:
    """aiokafka's default partitioner (murmur2, like the Java client), remembering the answer per key.

    Keys are tenant ids, so there are few of them; murmur2 in pure Python was a visible share of the
    per-request cost.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self._default = DefaultPartitioner()
        self._answers: dict[tuple[bytes, tuple[int, ...]], int] = {}
        self._max_keys = max_keys

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._default(key, all_partitions, available))
        cache_key = (key, tuple(all_partitions))
        answer = self._answers.get(cache_key)
        if answer is None:
            if len(self._answers) >= self._max_keys:
                self._answers.clear()
            answer = self._answers[cache_key] = int(self._default(key, all_partitions, available))
        return answer


async def _all_done(futures: Sequence[asyncio.Future[Any]], loop: asyncio.AbstractEventLoop) -> None:
    """Wait until every future is done. Unlike gather, a timeout or cancellation here leaves them running:
    a late acknowledgement must still release the request's bytes (Reservation.release_when_done)."""
    pending = [future for future in futures if not future.done()]
    if not pending:
        return
    waiter = loop.create_future()
    remaining = len(pending)

    def one_done(_: asyncio.Future[Any]) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and not waiter.done():
            waiter.set_result(None)

    for future in pending:
        future.add_done_callback(one_done)
    await waiter


def _first_failure(acks: Sequence[asyncio.Future[Any]]) -> str | None:
    for ack in acks:
        if ack.cancelled():
            return "cancelled"
        if ack.exception() is not None:
            return repr(ack.exception())
    return None


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    """Retrieve a late failure so asyncio does not log it as never retrieved; it was already answered 503."""
    if not future.cancelled():
        future.exception()
