"""The OTLP/HTTP receiver as plain ASGI parts: an auth backend, a lifespan that owns the producer, routes.

It never answers 200 for data the broker has not acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError
from google.protobuf.message import Message
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from services.receiver.auth import CredentialsRefused, LicenseAuthBackend, LicensedOrg
from services.receiver.limits import (
    BadEncoding,
    BodyTooLarge,
    InFlightBudget,
    TenantRateLimiter,
    read_body,
)
from services.receiver.metrics import ReceiverMetrics
from services.receiver.settings import ReceiverSettings
from shared import otlp
from shared.clock import Clock, SystemClock
from shared.kafka import MessageProducer, encode_headers, make_producer, tenant_key
from shared.keys import KeyMaterialError
from shared.licensing import OTEL_INGEST, LicenseVerifier

log = logging.getLogger("receiver")

# google.rpc.Code values used in OTLP error bodies.
_RPC_INVALID_ARGUMENT = 3
_RPC_PERMISSION_DENIED = 7
_RPC_RESOURCE_EXHAUSTED = 8
_RPC_UNAVAILABLE = 14
_RPC_UNAUTHENTICATED = 16

_GZIP = "gzip"
_IDENTITY = "identity"


class ProducerLifecycle:
    """The started producer, or None while the broker cannot be reached yet."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self.producer: Any | None = None

    async def start_with_retry(self, stop: asyncio.Event) -> None:
        delay = 0.5
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
                delay = min(delay * 2, 10.0)
                continue
            self.producer = producer
            return

    async def stop(self) -> None:
        if self.producer is not None:
            # stop() flushes what is still batched, so a SIGTERM loses nothing already acknowledged.
            await self.producer.stop()
            self.producer = None


RevocationSource = Callable[[], Awaitable[list[str]]]


@dataclass
class ReceiverState:
    settings: ReceiverSettings
    verifier: LicenseVerifier
    clock: Clock
    metrics: ReceiverMetrics
    registry: CollectorRegistry
    limiter: TenantRateLimiter
    budget: InFlightBudget
    producers: ProducerLifecycle
    revocations: RevocationSource | None
    revocations_loaded: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def producer(self) -> MessageProducer | None:
        producer: MessageProducer | None = self.producers.producer
        return producer


def load_issuer_public_keys(path: str) -> list[bytes]:
    import base64

    file = Path(path)
    if not file.is_file():
        raise KeyMaterialError(f"licence public key file {file} does not exist")
    keys = []
    for line in file.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key = base64.b64decode(line)
            if len(key) != 32:
                raise KeyMaterialError(f"{file}: not a 32-byte Ed25519 public key: {line[:12]}...")
            keys.append(key)
    if not keys:
        raise KeyMaterialError(f"licence public key file {file} holds no keys")
    return keys


def _encoding_of(conn: HTTPConnection) -> otlp.Encoding:
    return otlp.media_type(conn.headers.get("content-type")) or otlp.Encoding.PROTOBUF


def _message_response(
    message: Message, encoding: otlp.Encoding, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        otlp.encode_message(message, encoding), status_code=status, media_type=encoding.value, headers=headers
    )


def error_response(
    conn: HTTPConnection, status: int, rpc_code: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    return _message_response(otlp.status_body(rpc_code, message), _encoding_of(conn), status, headers)


def _on_auth_error(conn: HTTPConnection, exc: Exception) -> Response:
    state: ReceiverState = conn.app.state.receiver
    reason = exc.reason if isinstance(exc, CredentialsRefused) else "unauthenticated"
    state.metrics.requests.labels(route=conn.url.path, status="403" if _forbidden(exc) else "401").inc()
    state.metrics.refused.labels(tenant="", reason=reason).inc(0)
    if _forbidden(exc):
        return error_response(conn, 403, _RPC_PERMISSION_DENIED, str(exc))
    return error_response(
        conn, 401, _RPC_UNAUTHENTICATED, str(exc), {"WWW-Authenticate": 'Basic realm="otlp"'}
    )


def _forbidden(exc: Exception) -> bool:
    return isinstance(exc, CredentialsRefused) and exc.forbidden


@dataclass(frozen=True)
class Refusal(Exception):
    status: int
    rpc_code: int
    message: str
    reason: str
    retry_after: int | None = None


def _retry_headers(seconds: int | None) -> dict[str, str] | None:
    return None if seconds is None else {"Retry-After": str(seconds)}


async def _read_payload(request: Request, state: ReceiverState) -> tuple[otlp.Encoding, bytes, int]:
    """Checks content type and encoding, reads the body within limits; returns the bytes reserved."""
    encoding = otlp.media_type(request.headers.get("content-type"))
    if encoding is None:
        raise Refusal(415, _RPC_INVALID_ARGUMENT, "Content-Type must be application/x-protobuf or "
                      "application/json", "unsupported_media_type")
    content_encoding = request.headers.get("content-encoding", _IDENTITY).strip().lower()
    if content_encoding not in {_GZIP, _IDENTITY}:
        raise Refusal(415, _RPC_INVALID_ARGUMENT, f"Content-Encoding {content_encoding} is not supported",
                      "unsupported_encoding")
    limit = state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    declared_size = int(declared) if declared and declared.isdigit() else None
    if declared_size is not None and declared_size > limit and content_encoding == _IDENTITY:
        raise Refusal(413, _RPC_INVALID_ARGUMENT, f"body is over the {limit}-byte limit", "too_large")
    reserved = min(declared_size or 64 * 1024, limit)
    if not state.budget.try_reserve(reserved):
        raise Refusal(503, _RPC_UNAVAILABLE, "receiver is at its in-flight limit", "in_flight_limit",
                      state.settings.retry_after_seconds)
    try:
        body = await read_body(request.stream(), gzip=content_encoding == _GZIP, limit=limit)
    except BodyTooLarge:
        state.budget.release(reserved)
        raise Refusal(413, _RPC_INVALID_ARGUMENT,
                      f"body is over the {limit}-byte limit after decompression", "too_large") from None
    except BadEncoding as exc:
        state.budget.release(reserved)
        raise Refusal(400, _RPC_INVALID_ARGUMENT, str(exc), "bad_encoding") from None
    except BaseException:
        state.budget.release(reserved)
        raise
    extra = len(body) - reserved
    if extra > 0 and not state.budget.try_reserve(extra):
        state.budget.release(reserved)
        raise Refusal(503, _RPC_UNAVAILABLE, "receiver is at its in-flight limit", "in_flight_limit",
                      state.settings.retry_after_seconds)
    return encoding, body, max(reserved, len(body))


async def _enqueue(
    state: ReceiverState, topic: str, payloads: list[tuple[bytes, str, int]], lic: Any, request_id: str,
    received_at: str,
) -> None:
    producer = state.producer
    if producer is None:
        raise Refusal(503, _RPC_UNAVAILABLE, "the queue is not reachable", "broker_unavailable",
                      state.settings.retry_after_seconds)
    started = time.perf_counter()
    futures = []
    try:
        for index, (payload, content_type, count) in enumerate(payloads):
            headers = encode_headers({
                "tenant": lic.tenant_id,
                "org": lic.org_id,
                "license_id": lic.license_id,
                "content_type": content_type,
                "received_at": received_at,
                "request_id": request_id,
                "record_count": count,
                "chunk": f"{index + 1}/{len(payloads)}",
            })
            futures.append(await asyncio.wait_for(
                producer.send(topic, payload, key=tenant_key(lic.tenant_id), headers=headers),
                state.settings.enqueue_timeout_seconds,
            ))
        await asyncio.wait_for(asyncio.gather(*futures), state.settings.enqueue_timeout_seconds)
    except (KafkaError, TimeoutError, OSError) as exc:
        for future in futures:
            future.cancel()
        log.warning("enqueue failed", extra={"request_id": request_id, "error": repr(exc)})
        raise Refusal(503, _RPC_UNAVAILABLE, "the queue did not acknowledge the batch", "broker_unavailable",
                      state.settings.retry_after_seconds) from None
    state.metrics.produce_latency.observe(time.perf_counter() - started)


async def _handle_logs(request: Request, state: ReceiverState, lic: Any, request_id: str) -> Response:
    encoding, body, reserved = await _read_payload(request, state)
    try:
        if not body:
            return _message_response(otlp.logs_response(), encoding)
        try:
            batch = otlp.decode_request(body, encoding, otlp.ExportLogsServiceRequest)
        except otlp.PayloadError as exc:
            raise Refusal(400, _RPC_INVALID_ARGUMENT, str(exc), "malformed") from None
        total = otlp.count_log_records(batch)
        if total == 0:
            return _message_response(otlp.logs_response(), encoding)
        rejected, notes = 0, []
        limit = state.settings.max_records_per_request
        if total > limit:
            batch = _keep_first_records(batch, limit)
            rejected += total - limit
            notes.append(f"{total - limit} records over the {limit}-record limit per request")
        accepted_count = total - rejected
        wait = state.limiter.admit(lic.tenant_id, accepted_count)
        if wait > 0:
            state.metrics.refused.labels(tenant=lic.tenant_id, reason="rate_limited").inc(total)
            raise Refusal(429, _RPC_RESOURCE_EXHAUSTED, "tenant rate limit exceeded", "rate_limited",
                          max(1, math.ceil(wait)))
        max_bytes = state.settings.kafka_max_message_bytes
        if not rejected and len(body) <= max_bytes:
            payloads = [(body, encoding.value, total)]
        else:
            chunks, oversized = otlp.split_logs(batch, max_bytes)
            if oversized:
                rejected += len(oversized)
                notes.append(f"{len(oversized)} records larger than the {max_bytes}-byte message limit")
            payloads = [(c.payload, otlp.PROTOBUF, c.record_count) for c in chunks]
        received_at = str(time.time_ns())
        if payloads:
            await _enqueue(state, state.settings.topic_raw_logs, payloads, lic, request_id, received_at)
        accepted = sum(count for _, _, count in payloads)
        state.metrics.accepted.labels(tenant=lic.tenant_id).inc(accepted)
        if rejected:
            state.metrics.refused.labels(tenant=lic.tenant_id, reason="partial").inc(rejected)
        return _message_response(otlp.logs_response(rejected, "; ".join(notes)), encoding)
    finally:
        state.budget.release(reserved)


def _keep_first_records(batch: otlp.ExportLogsServiceRequest, limit: int) -> otlp.ExportLogsServiceRequest:
    kept = otlp.ExportLogsServiceRequest()
    remaining = limit
    for rl in batch.resource_logs:
        if remaining <= 0:
            break
        target_rl = kept.resource_logs.add()
        target_rl.resource.CopyFrom(rl.resource)
        target_rl.schema_url = rl.schema_url
        for sl in rl.scope_logs:
            if remaining <= 0:
                break
            target_sl = target_rl.scope_logs.add()
            target_sl.scope.CopyFrom(sl.scope)
            target_sl.schema_url = sl.schema_url
            records = list(sl.log_records)[:remaining]
            target_sl.log_records.extend(records)
            remaining -= len(records)
    return kept


async def _handle_metrics(request: Request, state: ReceiverState, lic: Any, request_id: str) -> Response:
    encoding, body, reserved = await _read_payload(request, state)
    try:
        if not body:
            return _message_response(otlp.metrics_response(), encoding)
        try:
            batch = otlp.decode_request(body, encoding, otlp.ExportMetricsServiceRequest)
        except otlp.PayloadError as exc:
            raise Refusal(400, _RPC_INVALID_ARGUMENT, str(exc), "malformed") from None
        points = otlp.count_data_points(batch)
        if not batch.resource_metrics:
            return _message_response(otlp.metrics_response(), encoding)
        max_bytes = state.settings.kafka_max_message_bytes
        if len(body) <= max_bytes:
            payloads = [(body, encoding.value, points)]
        else:
            chunks = [c for c in otlp.iter_metric_chunks(batch, max_bytes) if len(c) <= max_bytes]
            payloads = [(c, otlp.PROTOBUF, 0) for c in chunks]
        await _enqueue(state, state.settings.topic_raw_metrics, payloads, lic, request_id, str(time.time_ns()))
        state.metrics.accepted_points.labels(tenant=lic.tenant_id).inc(points)
        return _message_response(otlp.metrics_response(), encoding)
    finally:
        state.budget.release(reserved)


Handler = Callable[[Request, ReceiverState, Any, str], Awaitable[Response]]


def _ingest_endpoint(handler: Handler, route: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state: ReceiverState = request.app.state.receiver
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        user = request.user
        assert isinstance(user, LicensedOrg)
        try:
            response = await handler(request, state, user.license, request_id)
        except Refusal as refusal:
            if refusal.reason != "rate_limited":
                state.metrics.refused.labels(tenant=user.license.tenant_id, reason=refusal.reason).inc()
            response = error_response(
                request, refusal.status, refusal.rpc_code, refusal.message, _retry_headers(refusal.retry_after)
            )
        response.headers["x-request-id"] = request_id
        state.metrics.requests.labels(route=route, status=str(response.status_code)).inc()
        state.metrics.latency.labels(route=route).observe(time.perf_counter() - started)
        return response

    return endpoint


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    state: ReceiverState = request.app.state.receiver
    checks = {
        "broker": state.producer is not None,
        "licence_keys": bool(state.verifier.issuer_keys),
        "revocations": state.revocations_loaded or state.revocations is None,
    }
    return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)


async def metrics_endpoint(request: Request) -> Response:
    state: ReceiverState = request.app.state.receiver
    state.metrics.in_flight_bytes.set(state.budget.used)
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)


async def _refresh_revocations(state: ReceiverState, stop: asyncio.Event) -> None:
    assert state.revocations is not None
    while not stop.is_set():
        try:
            state.verifier.replace_revocations(await state.revocations())
            state.revocations_loaded = True
        except Exception as exc:  # the last good list stays in force while the database is away
            log.warning("could not refresh licence revocations", extra={"error": repr(exc)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), state.settings.revocation_refresh_seconds)


def create_app(
    settings: ReceiverSettings,
    verifier: LicenseVerifier,
    *,
    clock: Clock | None = None,
    producer_factory: Callable[[], Any] | None = None,
    revocations: RevocationSource | None = None,
) -> Starlette:
    clock = clock or SystemClock()
    registry = CollectorRegistry()
    state = ReceiverState(
        settings=settings,
        verifier=verifier,
        clock=clock,
        metrics=ReceiverMetrics(registry),
        registry=registry,
        limiter=TenantRateLimiter(settings.tenant_records_per_second, settings.tenant_burst_records, clock),
        budget=InFlightBudget(settings.max_in_flight_bytes),
        producers=ProducerLifecycle(
            producer_factory
            or (lambda: make_producer(settings.kafka_bootstrap_servers, settings.kafka_max_message_bytes))
        ),
        revocations=revocations,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        state.tasks.append(asyncio.create_task(state.producers.start_with_retry(stop)))
        if revocations is not None:
            state.tasks.append(asyncio.create_task(_refresh_revocations(state, stop)))
        try:
            yield
        finally:
            stop.set()
            for task in state.tasks:
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
            await state.producers.stop()

    auth = Middleware(
        AuthenticationMiddleware,
        backend=LicenseAuthBackend(verifier, clock, OTEL_INGEST),
        on_error=_on_auth_error,
    )
    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            Mount(
                "/v1",
                routes=[
                    Route("/logs", _ingest_endpoint(_handle_logs, "/v1/logs"), methods=["POST"]),
                    Route("/metrics", _ingest_endpoint(_handle_metrics, "/v1/metrics"), methods=["POST"]),
                ],
                middleware=[auth],
            ),
        ],
        lifespan=lifespan,
    )
    app.state.receiver = state
    return app
