"""The OTLP/HTTP receiver as plain ASGI parts: an auth backend, a lifespan that owns the producer, routes.

It never answers 200 for data the broker has not acknowledged. Routes:

- ``POST /v1/logs``, ``POST /v1/metrics``: OTLP/HTTP (protobuf or JSON, gzip or identity), HTTP Basic
  ``org:licence-key``; see services/receiver/ingest.py for the order of checks and every status code.
- ``GET /healthz``: liveness (the event loop answers).
- ``GET /readyz``: broker reachable, licence keys loaded, revocation list loaded, not draining.

Prometheus metrics are not among them: they name tenants, so ``__main__`` serves them on a port of their own
(RECEIVER_METRICS_PORT) that need not face clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from google.rpc import code_pb2
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from services.receiver import produce_encoding, protocol
from services.receiver.edge import EdgeMiddleware
from services.receiver.enqueue import CachingPartitioner, ProducerFactory, RawBatchQueue
from services.receiver.ingest import (
    LOGS,
    METRICS,
    ExportAuthenticator,
    IngestContext,
    IngestEndpoint,
    authentication_refusal,
)
from services.receiver.limits import InFlightBudget, TenantRateLimiter
from services.receiver.metrics import ReceiverMetrics
from services.receiver.settings import ReceiverSettings
from shared.clock import Clock, SystemClock
from shared.kafka import make_producer
from shared.licence_auth import CredentialsRefused
from shared.licensing import LicenseVerifier
from shared.messages.auth import load_signing_key

log = logging.getLogger("receiver")

RevocationSource = Callable[[], Awaitable[list[str]]]


@dataclass
class ReceiverState:
    settings: ReceiverSettings
    verifier: LicenseVerifier
    metrics: ReceiverMetrics
    registry: CollectorRegistry
    ingest: IngestContext
    revocations: RevocationSource | None
    draining: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def queue(self) -> RawBatchQueue:
        return self.ingest.queue

    def begin_drain(self) -> None:
        """SIGTERM: /readyz turns 503 so load balancers stop sending; the server stops accepting."""
        self.draining = True


def _on_auth_error(conn: HTTPConnection, exc: Exception) -> Response:
    """Refused credentials on a route served through Starlette (an export the dispatch passed on)."""
    state: ReceiverState = conn.app.state.receiver
    refusal = authentication_refusal(exc if isinstance(exc, CredentialsRefused) else CredentialsRefused(
        str(exc) or "unauthenticated", forbidden=False, reason="unauthenticated"))
    state.metrics.refused_requests.labels(conn.url.path, refusal.reason).inc()
    return protocol.error_response(refusal, protocol.encoding_of(conn.headers.get("content-type")))


async def _http_error(request: Request, exc: Exception) -> Response:
    """404, 405 and friends as google.rpc.Status too, so OTLP clients can log a readable reason."""
    assert isinstance(exc, HTTPException)
    rpc_code = {404: code_pb2.NOT_FOUND, 405: code_pb2.UNIMPLEMENTED}.get(exc.status_code, code_pb2.INVALID_ARGUMENT)
    refusal = protocol.Refusal(exc.status_code, rpc_code, str(exc.detail), "http_error", headers=exc.headers)
    return protocol.error_response(refusal, protocol.encoding_of(request.headers.get("content-type")))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    refusal = protocol.Refusal(500, code_pb2.INTERNAL, "internal error", "internal_error")
    return protocol.error_response(refusal, protocol.encoding_of(request.headers.get("content-type")))


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def readiness(state: ReceiverState) -> dict[str, bool]:
    return {
        "broker": state.queue.ready,
        "licence_keys": bool(state.verifier.issuer_keys),
        "revocations": state.ingest.revocations_ready(),
        "accepting": not state.draining,
    }


async def readyz(request: Request) -> Response:
    checks = readiness(request.app.state.receiver)
    return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)


async def _refresh_revocations(state: ReceiverState, stop: asyncio.Event) -> None:
    assert state.revocations is not None
    while not stop.is_set():
        try:
            state.verifier.replace_revocations(await state.revocations())
            state.ingest.revocations_loaded = True
        except Exception as exc:  # the last good list stays in force while the database is away
            log.warning("could not refresh licence revocations", extra={"error": repr(exc)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), state.settings.revocation_refresh_seconds)


class ExportRoutes:
    """Plain ASGI dispatch of the two export routes, ahead of every other layer.

    A POST to ``/v1/logs`` or ``/v1/metrics`` goes straight to its IngestEndpoint, which authenticates,
    times, drains and answers it itself, past Starlette's middleware (server errors, the edge middleware,
    exceptions), router, route and authentication middleware: each of those wraps every request (several
    wrap ``send`` or ``receive`` as well) and none adds anything to an export. Anything else (another
    method: 405, a trailing slash: redirect, health, unknown paths: 404) goes on to Starlette as before.
    """

    def __init__(self, app: ASGIApp, routes: dict[str, ASGIApp]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            endpoint = self.routes.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ReceiverApp(Starlette):
    """Starlette, with the export routes dispatched before its middleware stack (see ExportRoutes)."""

    def __init__(self, *, exports: dict[str, ASGIApp], **options: Any) -> None:
        super().__init__(**options)
        self.exports = exports

    def build_middleware_stack(self) -> ASGIApp:
        return ExportRoutes(super().build_middleware_stack(), self.exports)


def default_producer_factory(settings: ReceiverSettings) -> ProducerFactory:
    def factory() -> Any:
        produce_encoding.install()  # the record batches copied once instead of eight times
        return make_producer(
            settings.kafka_connection(),
            settings.kafka_max_message_bytes,
            # One batch per partition is in flight per broker at a time; it must hold many requests'
            # messages, but never exceed what the broker accepts as one batch (message.max.bytes).
            max_batch_size=settings.producer_batch_bytes,
            linger_ms=settings.kafka_linger_ms,
            request_timeout_ms=settings.kafka_request_timeout_ms,
            partitioner=CachingPartitioner(),
        )

    return factory


def create_app(
    settings: ReceiverSettings,
    verifier: LicenseVerifier,
    *,
    clock: Clock | None = None,
    producer_factory: ProducerFactory | None = None,
    revocations: RevocationSource | None = None,
) -> Starlette:
    """The ASGI app. ``revocations`` is None only where no revocation list exists (unit tests). Raw batches
    are authenticated with the first key of ``RAW_AUTH_KEY_FILE``."""
    clock = clock or SystemClock()
    raw_key = load_signing_key(settings.raw_auth_key_file, "RAW_AUTH_KEY_FILE")
    registry = CollectorRegistry()
    metrics = ReceiverMetrics(registry)
    queue = RawBatchQueue(
        producer_factory or default_producer_factory(settings),
        clock,
        max_message_bytes=settings.kafka_max_message_bytes,
        ack_timeout=settings.enqueue_timeout_seconds,
        probe_interval=settings.broker_probe_interval_seconds,
        key=raw_key,
    )
    budget = InFlightBudget(settings.max_in_flight_bytes)
    limiters = {
        signal.name: TenantRateLimiter(settings.tenant_records_per_second, settings.tenant_burst_records, clock)
        for signal in (LOGS, METRICS)
    }
    state = ReceiverState(
        settings=settings,
        verifier=verifier,
        metrics=metrics,
        registry=registry,
        ingest=IngestContext(settings, clock, metrics, budget, limiters, queue,
                             revocations_required=revocations is not None),
        revocations=revocations,
    )
    metrics.watch(lambda: budget.used, settings.max_in_flight_bytes, lambda: 1.0 if queue.ready else 0.0)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        state.tasks.append(asyncio.create_task(queue.connect(stop)))
        if revocations is not None:
            state.tasks.append(asyncio.create_task(_refresh_revocations(state, stop)))
        try:
            yield
        finally:
            state.draining = True
            stop.set()
            for task in state.tasks:
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
            await queue.close()

    # The export endpoints authenticate their requests themselves (ExportAuthenticator): the same checks as
    # the authentication middleware, without its wrapper objects on every export.
    authenticator = ExportAuthenticator(verifier, clock)
    exports: dict[str, ASGIApp] = {
        signal.route: IngestEndpoint(signal, state.ingest, authenticator) for signal in (LOGS, METRICS)
    }
    app = ReceiverApp(
        exports=exports,
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            # Reached only by what the export dispatch passes on (another method: 405; a root path).
            Route(LOGS.route, exports[LOGS.route], methods=["POST"]),
            Route(METRICS.route, exports[METRICS.route], methods=["POST"]),
        ],
        middleware=[
            # Outside the routes, so refusals are timed and drained too.
            Middleware(EdgeMiddleware, metrics=metrics, max_drain_bytes=settings.max_body_bytes),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.receiver = state
    app.state.ingest = state.ingest
    return app
