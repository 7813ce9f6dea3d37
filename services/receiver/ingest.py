"""POST /v1/logs and /v1/metrics: from request to acknowledged raw batch, with every refusal spelled out.

Order of checks (cheapest first, nothing decoded for a request that fails an earlier one):

1. licence, in the auth middleware (401 untrustworthy credentials, 403 expired/revoked/not entitled)
2. Content-Type (415), Content-Encoding (415), declared Content-Length over the limit (413)
3. revocation list not loaded yet, broker known to be down (503); a tenant whose bucket is empty or in
   debt (429, before its body is read)
4. body read within the size limit and the in-flight byte budget (413; 400 for bad gzip; 503)
5. concurrent-batch limit (503); the tenant's bucket charged by the decompressed size (429)
6. decode within its budget (services/receiver/decoding.py; 400, also for more empty resource/scope
   entries than a request may hold records; an empty request is a 200), large bodies off the event loop
7. per-request record cap, empty entries counted (partial_success); the charge settled to the count (429)
8. split for the Kafka message limit (records too large alone: partial_success)
9. send and wait for the ``acks=all`` acknowledgement (503 on failure or timeout), then 200.

429 is reserved for the per-tenant limit (Claude Code keeps retrying a 429 while it exits); every
overload of the receiver itself is a 503 with Retry-After.

A single record that cannot fit one Kafka message on its own (a several-MiB attribute, say) can never
be stored; it is refused through ``partial_success`` while the rest of the request is accepted. This is
what the specification asks for when a server "accepts only parts of the data": 200, the number
rejected and why, and the client must not retry it. Failing the whole request instead would lose the
good records too, since a 400 or 413 is not retried either.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from google.rpc import code_pb2
from starlette.types import Receive, Scope, Send

from services.receiver import protocol
from services.receiver.decoding import (
    LOG_LEVELS,
    METRIC_LEVELS,
    Decoded,
    Levels,
    TooManyEmptyEntries,
    decode_off_loop,
    decode_within_budget,
    decoded_memory_estimate,
)
from services.receiver.enqueue import BatchOrigin, BrokerUnavailable, OutgoingMessage, RawBatchQueue
from services.receiver.limits import (
    BadEncoding,
    BodyTooLarge,
    InFlightBudget,
    InFlightLimitReached,
    Reservation,
    TenantRateLimiter,
    read_body,
)
from services.receiver.memory import release_free_memory
from services.receiver.metrics import ReceiverMetrics
from services.receiver.settings import ReceiverSettings
from shared import otlp
from shared.clock import Clock
from shared.licence_auth import CredentialsRefused, parse_basic
from shared.licensing import OTEL_INGEST, License, LicenseRefused, LicenseVerifier
from shared.messages import raw_batch

log = logging.getLogger("receiver")

_GZIP = {"gzip", "x-gzip"}
_IDENTITY = {"identity", ""}


@dataclass(frozen=True)
class Signal:
    """What differs between logs and metrics; everything else is one code path."""

    name: str  # "logs" or "metrics": the metric label and the response type
    route: str
    unit: str  # what partial_success counts, for messages
    request_type: type[otlp.ExportLogsServiceRequest] | type[otlp.ExportMetricsServiceRequest]
    count: Callable[[Any], int]
    split: Callable[[Any, int], tuple[list[otlp.LogChunk], list[Any]]]
    keep_first: Callable[[Any, int], Any] | None
    topic: Callable[[ReceiverSettings], str]
    levels: Levels

    @property
    def kind(self) -> raw_batch.Kind:
        return "logs" if self.name == "logs" else "metrics"


LOGS = Signal(
    name="logs",
    route="/v1/logs",
    unit="log records",
    request_type=otlp.ExportLogsServiceRequest,
    count=otlp.count_log_records,
    split=otlp.split_logs,
    keep_first=otlp.keep_first_log_records,
    topic=lambda settings: settings.topic_raw_logs,
    levels=LOG_LEVELS,
)
METRICS = Signal(
    name="metrics",
    route="/v1/metrics",
    unit="data points",
    request_type=otlp.ExportMetricsServiceRequest,
    count=otlp.count_data_points,
    split=otlp.split_metrics,
    keep_first=None,  # data points are not cut out of a metric; body, rate and in-flight limits still apply
    topic=lambda settings: settings.topic_raw_metrics,
    levels=METRIC_LEVELS,
)


@dataclass
class IngestContext:
    """What the ingest endpoints share; built once by create_app."""

    settings: ReceiverSettings
    clock: Clock
    metrics: ReceiverMetrics
    budget: InFlightBudget
    limiters: dict[str, TenantRateLimiter]
    queue: RawBatchQueue
    revocations_required: bool
    revocations_loaded: bool = False
    batches_in_progress: int = 0
    # Requests over one Kafka message (decoded and split), processed one at a time.
    large_requests: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))

    def revocations_ready(self) -> bool:
        # Fail closed: until the first revocation list is in, a revoked licence cannot be told apart.
        return self.revocations_loaded or not self.revocations_required


class ClientDisconnected(Exception):
    pass


@dataclass(slots=True)  # not frozen: a frozen dataclass sets each field through object.__setattr__
class RequestHeaders:
    """The few request headers ingest looks at, read in one pass over the ASGI header list."""

    content_type: str | None
    content_encoding: str
    content_length: str
    authorization: bytes | None

    @classmethod
    def of(cls, scope: Scope) -> RequestHeaders:
        content_type: str | None = None
        content_encoding = content_length = ""
        authorization: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-encoding":
                content_encoding = value.decode("latin-1").strip().lower()
            elif name == b"content-length":
                content_length = value.decode("latin-1")
            elif name == b"authorization" and authorization is None:
                authorization = value
        return cls(content_type, content_encoding, content_length, authorization)


def authentication_refusal(exc: CredentialsRefused) -> protocol.Refusal:
    """401 (with WWW-Authenticate) for credentials we cannot trust; 403 for a licence that does not allow this."""
    if exc.forbidden:
        return protocol.Refusal(403, code_pb2.PERMISSION_DENIED, str(exc), exc.reason)
    return protocol.Refusal(401, code_pb2.UNAUTHENTICATED, str(exc), exc.reason,
                            headers={"WWW-Authenticate": 'Basic realm="otlp", charset="UTF-8"'})


class ExportAuthenticator:
    """HTTP Basic ``org:licence-key`` checked on every export, as shared.licence_auth's backend does it.

    Exporters send the same Authorization header on every request, so its parse (base64, UTF-8, the colon)
    is remembered by the header's bytes, once the licence it names has verified (so refused credentials
    never fill the memory); the licence itself (org, revocation, expiry, entitlement; the signature, which
    the verifier remembers) is checked by the verifier on every request, with the current time and list.
    """

    _MAX_REMEMBERED = 10_000

    def __init__(self, verifier: LicenseVerifier, clock: Clock) -> None:
        self._verifier = verifier
        self._clock = clock
        self._credentials: dict[bytes, tuple[str, str]] = {}

    def licence(self, authorization: bytes | None) -> License:
        """The request's licence, or protocol.Refusal (401 or 403)."""
        try:
            credentials = self._credentials.get(authorization) if authorization is not None else None
            remember = credentials is None and authorization is not None
            if credentials is None:
                credentials = parse_basic(None if authorization is None else authorization.decode("latin-1"))
            org, token = credentials
            try:
                lic = self._verifier.verify(org, token, now=self._clock.now(), entitlement=OTEL_INGEST)
            except LicenseRefused as refused:
                raise CredentialsRefused(str(refused), forbidden=not refused.problem.is_authentication_failure,
                                         reason=refused.problem.value) from None
        except CredentialsRefused as exc:
            raise authentication_refusal(exc) from None
        if remember and authorization is not None:
            if len(self._credentials) >= self._MAX_REMEMBERED:
                self._credentials.clear()
            self._credentials[authorization] = credentials
        return lic


class RequestBody:
    """The request's body messages as an async iterator, remembering whether the body was read to its end."""

    __slots__ = ("_receive", "complete")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.complete = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self.complete:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.complete = True
                raise ClientDisconnected
            self.complete = not message.get("more_body", False)
            yield message.get("body", b"")

    async def drain(self, limit: int) -> None:
        """Read (and drop) what is left of the body, up to ``limit`` bytes: see services/receiver/edge.py."""
        drained = 0
        while not self.complete and drained <= limit:
            message = await self._receive()
            self.complete = message["type"] == "http.disconnect" or not message.get("more_body", False)
            drained += len(message.get("body", b""))


class IngestEndpoint:
    """The ASGI app behind one signal's POST route: authentication, ingest, the answer and its timing.

    A plain ASGI class, and the only layer an export goes through (services/receiver/app.py dispatches to
    it ahead of Starlette's middleware): it runs for every export, and each wrapper around it (a Request,
    the authentication middleware, middleware wrapping ``receive`` and ``send``) cost more than what it
    does here in a few lines. It does what the edge middleware does for the other routes: the request's
    duration in the metrics, and the unread rest of a refused body drained before the answer.
    """

    def __init__(self, signal: Signal, context: IngestContext, authenticator: ExportAuthenticator) -> None:
        self.signal = signal
        self.context = context
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        context, signal = self.context, self.signal
        headers = RequestHeaders.of(scope)
        body = RequestBody(receive)
        request_id = os.urandom(16).hex()  # as unique as a uuid4, without building a UUID object
        tenant = ""
        try:
            try:
                lic = self.authenticator.licence(headers.authorization)
                tenant = lic.tenant_id
                request = IngestRequest(context=context, signal=signal,
                                        origin=BatchOrigin(lic.tenant_id, lic.org_id, lic.license_id),
                                        request_id=request_id, headers=headers)
                answer = await request.answer(body.chunks())
            except protocol.Refusal as refusal:
                context.metrics.refused_requests.labels(signal.route, refusal.reason).inc()
                context.metrics.refused(signal.name, tenant, refusal.reason, refusal.records)
                answer = protocol.error_answer(refusal, protocol.encoding_of(headers.content_type))
        except ClientDisconnected:
            return  # nobody to answer; nothing was enqueued
        except Exception as exc:  # a bug is still answered as a Status, not a dropped connection
            log.exception("unhandled error", exc_info=exc)
            answer = protocol.error_answer(
                protocol.Refusal(500, code_pb2.INTERNAL, "internal error", "internal_error"),
                protocol.encoding_of(headers.content_type))
        if not body.complete and _worth_draining(headers.content_length, context.settings.max_body_bytes):
            await body.drain(context.settings.max_body_bytes)
        context.metrics.request_done(signal.route, answer.status, time.perf_counter() - started)
        await answer.send(send, request_id)


def _worth_draining(content_length: str, limit: int) -> bool:
    """A body declared larger than the drain limit is not read: that client gets its answer and a closed
    connection. Chunked bodies (no Content-Length) are read up to the limit."""
    return not content_length or (content_length.isdigit() and int(content_length) <= limit)


@dataclass
class Counted:
    """A decoded batch after the per-request record cap: what is kept, and what partial_success reports."""

    batch: Any
    total: int  # records the body held
    rejected: int  # records refused through partial_success
    notes: list[str]

    @property
    def admitted(self) -> int:
        return self.total - self.rejected


@dataclass(slots=True)
class IngestRequest:
    """One export request on its way from the socket to an acknowledged raw batch.

    Each step reads what it needs from here (and records what it learnt) instead of threading the
    request's tenant, signal, encoding, body and memory reservation through every call.
    """

    context: IngestContext
    signal: Signal
    origin: BatchOrigin
    request_id: str
    headers: RequestHeaders
    encoding: otlp.Encoding = otlp.Encoding.PROTOBUF  # from Content-Type, once checked
    gzip: bool = False  # from Content-Encoding, once checked
    reservation: Reservation | None = None  # its share of the in-flight budget, once admitted
    body: bytes = b""  # decompressed, once read
    charged: int = 0  # records charged to the tenant's bucket before decoding, by body size

    @property
    def settings(self) -> ReceiverSettings:
        return self.context.settings

    @property
    def limiter(self) -> TenantRateLimiter:
        return self.context.limiters[self.signal.name]

    @property
    def tenant(self) -> str:
        return self.origin.tenant_id

    async def answer(self, body_chunks: AsyncIterator[bytes]) -> protocol.Answer:
        """Every check in the module docstring's order; a refusal is raised as protocol.Refusal."""
        self._check_headers()
        self._admit()
        self.reservation = self.context.budget.reservation()
        try:
            await self._read(body_chunks)
            if not self.body:
                return protocol.success_answer(self.signal.name, self.encoding)  # an empty request is a success
            return await self._process()
        finally:
            # After a failed enqueue the producer's futures release it, once the producer is done with the bytes.
            if not self.reservation.handed_over:
                self.reservation.release()

    def _check_headers(self) -> None:
        headers = self.headers
        encoding = protocol.media_type(headers.content_type)
        if encoding is None:
            raise protocol.unsupported_media_type(
                f"Content-Type {headers.content_type or '(none)'} is not supported: send application/x-protobuf or "
                "application/json", "unsupported_media_type")
        content_coding = headers.content_encoding
        if content_coding not in _GZIP and content_coding not in _IDENTITY:
            raise protocol.unsupported_media_type(
                f"Content-Encoding {content_coding} is not supported: send gzip or identity", "unsupported_encoding")
        limit = self.settings.max_body_bytes
        declared = headers.content_length
        if declared.isdigit() and int(declared) > limit:
            # For gzip the raw body is held to the same limit as the inflated one (see read_body).
            raise protocol.too_large(f"body of {declared} bytes is over the {limit}-byte limit")
        self.encoding = encoding
        self.gzip = content_coding in _GZIP

    def _admit(self) -> None:
        settings = self.settings
        if not self.context.revocations_ready():
            raise protocol.unavailable("the licence revocation list is not loaded yet", "revocations_not_loaded",
                                       settings.retry_after_seconds)
        try:
            self.context.queue.admit()
        except BrokerUnavailable as exc:
            raise protocol.unavailable(str(exc), "broker_unavailable", settings.retry_after_seconds) from None
        # A tenant whose bucket is empty (or in debt for refused work) is answered before its body is even
        # read or inflated: its next request costs the receiver next to nothing.
        owed = self.limiter.wait_before_any(self.tenant)
        if owed > 0:
            raise protocol.rate_limited(max(1, math.ceil(owed)), records=0)

    async def _read(self, body_chunks: AsyncIterator[bytes]) -> None:
        assert self.reservation is not None
        settings = self.settings
        limit = settings.max_body_bytes
        try:
            self.body = await read_body(body_chunks, gzip=self.gzip, limit=limit, reservation=self.reservation)
        except BodyTooLarge:
            raise protocol.too_large(f"body is over the {limit}-byte limit after decompression") from None
        except BadEncoding as exc:
            raise protocol.bad_data(str(exc), "bad_encoding") from None
        except InFlightLimitReached:
            raise protocol.unavailable("the receiver is at its in-flight limit", "in_flight_limit",
                                       settings.overload_retry_after_seconds) from None

    async def _process(self) -> protocol.Answer:
        context, settings = self.context, self.settings
        if context.batches_in_progress >= settings.max_concurrent_batches:
            # More work queued than the process gets through in a few tens of milliseconds: waiting longer
            # only adds latency (and memory) for everyone, so the excess is refused now and retried later.
            raise protocol.unavailable("the receiver is at its concurrent-request limit", "concurrency_limit",
                                       settings.overload_retry_after_seconds)
        context.batches_in_progress += 1
        try:
            payload_limit = context.queue.payload_limit(self.origin)
            if len(self.body) <= payload_limit:
                return await self._decode_and_send(payload_limit)
            return await self._decode_and_send_large(payload_limit)
        finally:
            context.batches_in_progress -= 1

    async def _decode_and_send_large(self, payload_limit: int) -> protocol.Answer:
        # A body over one Kafka message is decoded and split into new payloads (which the producer copies
        # again): one such request at a time, its copies counted, or a few of them would multiply the memory.
        settings, large_requests = self.settings, self.context.large_requests
        try:
            async with asyncio.timeout(settings.enqueue_timeout_seconds):
                await large_requests.acquire()
        except TimeoutError:
            raise protocol.unavailable("the receiver is busy with other large requests", "large_request_limit",
                                       settings.overload_retry_after_seconds) from None
        try:
            return await self._decode_and_send(payload_limit)
        finally:
            large_requests.release()
            release_free_memory()

    async def _decode_and_send(self, payload_limit: int) -> protocol.Answer:
        self._charge_and_reserve()
        decoded = await self._decode()
        counted = self._count(decoded)
        if counted.total == 0:
            self.limiter.settle(self.tenant, self.charged, decoded.empty_entries)
            return protocol.success_answer(self.signal.name, self.encoding)
        wait = self.limiter.settle(self.tenant, self.charged, counted.admitted + decoded.empty_entries)
        if wait > 0:
            raise protocol.rate_limited(max(1, math.ceil(wait)), records=counted.total)
        try:
            messages = await self._messages(counted, payload_limit)
            await self._enqueue(messages)
        except BrokerUnavailable as exc:
            self.limiter.refund(self.tenant, counted.admitted)  # a retry after an outage is not a second use
            raise protocol.unavailable(str(exc), "broker_unavailable", self.settings.retry_after_seconds,
                                       records=counted.total) from None
        except InFlightLimitReached:
            self.limiter.refund(self.tenant, counted.admitted)
            raise protocol.unavailable("the receiver is at its in-flight limit", "in_flight_limit",
                                       self.settings.overload_retry_after_seconds, records=counted.total) from None
        metrics = self.context.metrics
        metrics.accepted(self.signal.name, self.tenant, sum(message.record_count for message in messages))
        if counted.rejected:
            metrics.refused(self.signal.name, self.tenant, "partial", counted.rejected)
        return protocol.success_answer(self.signal.name, self.encoding, counted.rejected, "; ".join(counted.notes))

    def _charge_and_reserve(self) -> None:
        """The tenant pays before anything is decoded, by the decompressed size (as an honest body of that
        size would hold records), so a tenant at its limit costs no decoding at all; settled once counted.
        The in-flight budget then holds what decoding will allocate, not only the body's bytes."""
        assert self.reservation is not None
        settings, body = self.settings, self.body
        self.charged = -(-len(body) // settings.tenant_bytes_per_record)
        wait = self.limiter.admit(self.tenant, self.charged)
        if wait > 0:
            raise protocol.rate_limited(max(1, math.ceil(wait)), records=0)  # not counted: nothing was decoded
        decoded_bytes = decoded_memory_estimate(body, self.encoding)
        if len(body) + decoded_bytes > settings.max_in_flight_bytes:
            raise protocol.too_large(f"decoding this body would hold about {len(body) + decoded_bytes} bytes, "
                                     f"over the receiver's {settings.max_in_flight_bytes}-byte in-flight limit")
        try:
            self.reservation.grow_to(len(body) + decoded_bytes)
        except InFlightLimitReached:
            self.limiter.refund(self.tenant, self.charged)
            raise protocol.unavailable("the receiver is at its in-flight limit", "in_flight_limit",
                                       settings.overload_retry_after_seconds) from None

    async def _decode(self) -> Decoded:
        settings, signal, body = self.settings, self.signal, self.body
        cap = settings.max_records_per_request
        decode = decode_off_loop if len(body) > settings.decode_off_loop_bytes else _decode_here
        try:
            return await decode(body, self.encoding, signal.request_type, signal.levels, cap)
        except TooManyEmptyEntries as exc:
            self.limiter.charge_in_full(self.tenant, self.charged, cap + 1)
            raise protocol.bad_data(str(exc), "empty_entries") from None
        except otlp.PayloadError as exc:
            raise protocol.bad_data(str(exc)) from None  # the charge stands: the decoding was done

    def _count(self, decoded: Decoded) -> Counted:
        """Records counted, and cut to the per-request cap (empty entries count against it)."""
        signal, cap, empty = self.signal, self.settings.max_records_per_request, decoded.empty_entries
        batch = decoded.request
        kept = decoded.records if decoded.records >= 0 else signal.count(batch)  # counted while decoding
        total = max(kept, decoded.items_before_cut)  # JSON log records past the cap were cut before conversion
        counted = Counted(batch, total, 0, [])
        if signal.keep_first is None or total == 0:
            return counted
        allowed = cap - empty  # empty resource and scope entries count against the records a request may hold
        if kept > allowed:
            counted.batch = signal.keep_first(batch, allowed)
            kept = allowed
        if total > kept:
            counted.rejected = total - kept
            counted.notes.append(f"{total - kept} {signal.unit} over the limit of {cap} per request"
                                 + (f" ({empty} empty resource or scope entries count against it)" if empty else ""))
        return counted

    async def _messages(self, counted: Counted, payload_limit: int) -> list[OutgoingMessage]:
        assert self.reservation is not None
        body, signal = self.body, self.signal
        fits_one_message = len(body) <= payload_limit
        if fits_one_message and not counted.rejected:
            # The common case: the body goes to the topic exactly as it arrived (decompressed), never
            # serialised a second time.
            return [OutgoingMessage(body, self.encoding.value, counted.total)]
        batch = counted.batch
        counted.batch = None
        self.reservation.grow_to(len(body) + (batch.ByteSize() if fits_one_message else len(body)))
        # Splitting is a Python loop over every record: on a worker thread, so other requests move.
        chunks, oversized = (signal.split(batch, payload_limit) if fits_one_message
                             else await asyncio.to_thread(signal.split, batch, payload_limit))
        del batch
        if oversized:
            too_big = sum(signal.count(single) for single in oversized)
            counted.rejected += too_big
            counted.notes.append(f"{too_big} {signal.unit} larger than the "
                                 f"{self.settings.kafka_max_message_bytes}-byte message limit on their own")
        return [OutgoingMessage(chunk.payload, otlp.PROTOBUF, chunk.record_count) for chunk in chunks]

    async def _enqueue(self, messages: list[OutgoingMessage]) -> None:
        if not messages:
            return
        assert self.reservation is not None
        context = self.context
        started = time.perf_counter()
        await context.queue.enqueue(self.signal.topic(context.settings), self.signal.kind, messages, self.origin,
                                    request_id=self.request_id, received_at_ns=_nanoseconds(context.clock),
                                    reservation=self.reservation)
        context.metrics.enqueue_duration.observe(time.perf_counter() - started)


async def _decode_here(
    body: bytes, encoding: otlp.Encoding, message_type: type[Any], levels: Levels, cap: int
) -> Decoded:
    """Small bodies: decoded on the loop, where a thread hand-off would cost more than the decoding."""
    return decode_within_budget(body, encoding, message_type, levels, cap)


def _nanoseconds(clock: Clock) -> int:
    now = clock.now()
    return int(now.timestamp()) * 1_000_000_000 + now.microsecond * 1_000
