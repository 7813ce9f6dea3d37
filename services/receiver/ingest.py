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

from starlette.responses import Response
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
from shared.licence_auth import LicensedOrg
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


@dataclass(frozen=True)
class RequestHeaders:
    """The few request headers ingest looks at, read in one pass over the ASGI header list."""

    content_type: str | None
    content_encoding: str
    content_length: str

    @classmethod
    def of(cls, scope: Scope) -> RequestHeaders:
        content_type: str | None = None
        content_encoding = content_length = ""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-encoding":
                content_encoding = value.decode("latin-1").strip().lower()
            elif name == b"content-length":
                content_length = value.decode("latin-1")
        return cls(content_type, content_encoding, content_length)


async def _body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


class IngestEndpoint:
    """The ASGI app behind one signal's POST route.

    A plain ASGI class rather than a Starlette request handler: it runs for every export, and the
    Request wrapper costs more than the few headers it needs.
    """

    def __init__(self, signal: Signal) -> None:
        self.signal = signal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context: IngestContext = scope["app"].state.ingest
        user = scope["user"]
        assert isinstance(user, LicensedOrg)  # the authentication middleware guarantees it
        lic = user.license
        signal = self.signal
        request_id = os.urandom(16).hex()  # as unique as a uuid4, without building a UUID object
        headers = RequestHeaders.of(scope)
        origin = BatchOrigin(lic.tenant_id, lic.org_id, lic.license_id)
        try:
            response = await _ingest(headers, _body_chunks(receive), context, signal, origin, request_id)
        except protocol.Refusal as refusal:
            context.metrics.refused_requests.labels(signal.route, refusal.reason).inc()
            context.metrics.refused(signal.name, lic.tenant_id, refusal.reason, refusal.records)
            response = protocol.error_response(refusal, protocol.encoding_of(headers.content_type))
        except ClientDisconnected:
            return  # nobody to answer; nothing was enqueued
        response.headers["x-request-id"] = request_id
        await response(scope, receive, send)


async def _ingest(
    headers: RequestHeaders,
    body_chunks: AsyncIterator[bytes],
    context: IngestContext,
    signal: Signal,
    origin: BatchOrigin,
    request_id: str,
) -> Response:
    settings = context.settings
    encoding = otlp.media_type(headers.content_type)
    if encoding is None:
        raise protocol.unsupported_media_type(
            f"Content-Type {headers.content_type or '(none)'} is not supported: send application/x-protobuf or "
            "application/json", "unsupported_media_type")
    content_coding = headers.content_encoding
    if content_coding not in _GZIP and content_coding not in _IDENTITY:
        raise protocol.unsupported_media_type(
            f"Content-Encoding {content_coding} is not supported: send gzip or identity", "unsupported_encoding")
    limit = settings.max_body_bytes
    declared = headers.content_length
    if declared.isdigit() and int(declared) > limit:
        # For gzip the raw body is held to the same limit as the inflated one (see read_body).
        raise protocol.too_large(f"body of {declared} bytes is over the {limit}-byte limit")
    if not context.revocations_ready():
        raise protocol.unavailable("the licence revocation list is not loaded yet", "revocations_not_loaded",
                                   settings.retry_after_seconds)
    try:
        context.queue.admit()
    except BrokerUnavailable as exc:
        raise protocol.unavailable(str(exc), "broker_unavailable", settings.retry_after_seconds) from None
    # A tenant whose bucket is empty (or in debt for refused work) is answered before its body is even
    # read or inflated: its next request costs the receiver next to nothing.
    owed = context.limiters[signal.name].wait_before_any(origin.tenant_id)
    if owed > 0:
        raise protocol.rate_limited(max(1, math.ceil(owed)), records=0)

    reservation = context.budget.reservation()
    try:
        return await _ingest_body(body_chunks, context, signal, origin, request_id, encoding,
                                  content_coding in _GZIP, reservation)
    finally:
        # After a failed enqueue the producer's futures release it, once the producer is done with the bytes.
        if not reservation.handed_over:
            reservation.release()


async def _ingest_body(
    body_chunks: AsyncIterator[bytes],
    context: IngestContext,
    signal: Signal,
    origin: BatchOrigin,
    request_id: str,
    encoding: otlp.Encoding,
    gzip: bool,
    reservation: Reservation,
) -> Response:
    settings = context.settings
    limit = settings.max_body_bytes
    try:
        body = await read_body(body_chunks, gzip=gzip, limit=limit, reservation=reservation)
    except BodyTooLarge:
        raise protocol.too_large(f"body is over the {limit}-byte limit after decompression") from None
    except BadEncoding as exc:
        raise protocol.bad_data(str(exc), "bad_encoding") from None
    except InFlightLimitReached:
        raise protocol.unavailable("the receiver is at its in-flight limit", "in_flight_limit",
                                   settings.overload_retry_after_seconds) from None
    if not body:
        return protocol.success_response(signal.name, encoding)  # an empty request is a success
    if context.batches_in_progress >= settings.max_concurrent_batches:
        # More work queued than the process gets through in a few tens of milliseconds: waiting longer
        # only adds latency (and memory) for everyone, so the excess is refused now and retried later.
        raise protocol.unavailable("the receiver is at its concurrent-request limit", "concurrency_limit",
                                   settings.overload_retry_after_seconds)
    context.batches_in_progress += 1
    try:
        return await _process(body, context, signal, origin, request_id, encoding, reservation)
    finally:
        context.batches_in_progress -= 1


async def _process(
    body: bytes,
    context: IngestContext,
    signal: Signal,
    origin: BatchOrigin,
    request_id: str,
    encoding: otlp.Encoding,
    reservation: Reservation,
) -> Response:
    settings = context.settings
    payload_limit = context.queue.payload_limit(origin)
    if len(body) <= payload_limit:
        return await _decode_and_send(body, context, signal, origin, request_id, encoding, reservation,
                                      payload_limit)
    # A body over one Kafka message is decoded and split into new payloads (which the producer copies
    # again): one such request at a time, its copies counted, or a few of them would multiply the memory.
    try:
        async with asyncio.timeout(settings.enqueue_timeout_seconds):
            await context.large_requests.acquire()
    except TimeoutError:
        raise protocol.unavailable("the receiver is busy with other large requests", "large_request_limit",
                                   settings.overload_retry_after_seconds) from None
    try:
        return await _decode_and_send(body, context, signal, origin, request_id, encoding, reservation,
                                      payload_limit)
    finally:
        context.large_requests.release()
        release_free_memory()


async def _decode_and_send(
    body: bytes,
    context: IngestContext,
    signal: Signal,
    origin: BatchOrigin,
    request_id: str,
    encoding: otlp.Encoding,
    reservation: Reservation,
    payload_limit: int,
) -> Response:
    settings = context.settings
    fits_one_message = len(body) <= payload_limit
    tenant = origin.tenant_id
    limiter = context.limiters[signal.name]
    # The tenant pays before anything is decoded, by the decompressed size (as an honest body of that size
    # would hold records), so a tenant at its limit costs no decoding at all; settled once counted.
    charged = -(-len(body) // settings.tenant_bytes_per_record)
    wait = limiter.admit(tenant, charged)
    if wait > 0:
        raise protocol.rate_limited(max(1, math.ceil(wait)), records=0)  # not counted: nothing was decoded
    # The in-flight budget holds what decoding will allocate, not only the body's bytes.
    decoded_bytes = decoded_memory_estimate(body, encoding)
    if len(body) + decoded_bytes > settings.max_in_flight_bytes:
        raise protocol.too_large(f"decoding this body would hold about {len(body) + decoded_bytes} bytes, over "
                                 f"the receiver's {settings.max_in_flight_bytes}-byte in-flight limit")
    try:
        reservation.grow_to(len(body) + decoded_bytes)
    except InFlightLimitReached:
        limiter.refund(tenant, charged)
        raise protocol.unavailable("the receiver is at its in-flight limit", "in_flight_limit",
                                   settings.overload_retry_after_seconds) from None
    cap = settings.max_records_per_request
    try:
        decoded = await (decode_off_loop if len(body) > settings.decode_off_loop_bytes else _decode_here)(
            body, encoding, signal.request_type, signal.levels, cap)
    except TooManyEmptyEntries as exc:
        limiter.charge_in_full(tenant, charged, cap + 1)
        raise protocol.bad_data(str(exc), "empty_entries") from None
    except otlp.PayloadError as exc:
        raise protocol.bad_data(str(exc)) from None  # the charge stands: the decoding was done
    batch = decoded.request
    empty = decoded.empty_entries
    kept = signal.count(batch)
    total = max(kept, decoded.items_before_cut)  # JSON log records past the cap were cut before conversion
    if total == 0:
        limiter.settle(tenant, charged, empty)
        return protocol.success_response(signal.name, encoding)

    rejected = 0
    notes: list[str] = []
    allowed = cap - empty  # empty resource and scope entries count against the records a request may hold
    if signal.keep_first is not None and kept > allowed:
        batch = signal.keep_first(batch, allowed)
        kept = allowed
    if signal.keep_first is not None and total > kept:
        rejected += total - kept
        notes.append(f"{total - kept} {signal.unit} over the limit of {cap} per request"
                     + (f" ({empty} empty resource or scope entries count against it)" if empty else ""))
    admitted = total - rejected

    wait = limiter.settle(tenant, charged, admitted + empty)
    if wait > 0:
        raise protocol.rate_limited(max(1, math.ceil(wait)), records=total)

    try:
        if fits_one_message and not rejected:
            # The common case: the body goes to the topic exactly as it arrived (decompressed).
            messages = [OutgoingMessage(body, encoding.value, total)]
        else:
            reservation.grow_to(len(body) + (batch.ByteSize() if fits_one_message else len(body)))
            # Splitting is a Python loop over every record: on a worker thread, so other requests move.
            chunks, oversized = (signal.split(batch, payload_limit) if fits_one_message
                                 else await asyncio.to_thread(signal.split, batch, payload_limit))
            del batch
            if oversized:
                too_big = sum(signal.count(single) for single in oversized)
                rejected += too_big
                notes.append(f"{too_big} {signal.unit} larger than the {settings.kafka_max_message_bytes}-byte "
                             "message limit on their own")
            messages = [OutgoingMessage(chunk.payload, otlp.PROTOBUF, chunk.record_count) for chunk in chunks]
            del chunks
        await _enqueue(context, signal, origin, request_id, messages, reservation)
    except BrokerUnavailable as exc:
        limiter.refund(origin.tenant_id, admitted)  # a retry after an outage is not a second use
        raise protocol.unavailable(str(exc), "broker_unavailable", settings.retry_after_seconds,
                                   records=total) from None
    except InFlightLimitReached:
        limiter.refund(origin.tenant_id, admitted)
        raise protocol.unavailable("the receiver is at its in-flight limit", "in_flight_limit",
                                   settings.overload_retry_after_seconds, records=total) from None
    accepted = sum(message.record_count for message in messages)
    context.metrics.accepted(signal.name, origin.tenant_id, accepted)
    if rejected:
        context.metrics.refused(signal.name, origin.tenant_id, "partial", rejected)
    return protocol.success_response(signal.name, encoding, rejected, "; ".join(notes))


async def _enqueue(context: IngestContext, signal: Signal, origin: BatchOrigin, request_id: str,
                   messages: list[OutgoingMessage], reservation: Reservation) -> None:
    if not messages:
        return
    started = time.perf_counter()
    await context.queue.enqueue(signal.topic(context.settings), signal.kind, messages, origin, request_id=request_id,
                                received_at_ns=_nanoseconds(context.clock), reservation=reservation)
    context.metrics.enqueue_duration.observe(time.perf_counter() - started)


async def _decode_here(
    body: bytes, encoding: otlp.Encoding, message_type: type[Any], levels: Levels, cap: int
) -> Decoded:
    """Small bodies: decoded on the loop, where a thread hand-off would cost more than the decoding."""
    return decode_within_budget(body, encoding, message_type, levels, cap)


def _nanoseconds(clock: Clock) -> int:
    now = clock.now()
    return int(now.timestamp()) * 1_000_000_000 + now.microsecond * 1_000
