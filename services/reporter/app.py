"""The reporting service as plain ASGI parts: access control (services/reporter/authz.py, in front of every
route), a lifespan owning the pool, the access-trail producer and the background work, the JSON API under
/api/v1, the portal under /portal.

Routes (who may use which: ``authz.RULES``):

- ``/api/v1/...``: the reporting API (see services/reporter/openapi.py), ``Authorization: Bearer`` with a
  reporting token or an OIDC token; JSON errors.
- ``/portal/...``: the same reports as HTML, after signing in at /portal/login.
- ``GET /openapi.json``, ``GET /healthz``, ``GET /readyz``, ``GET /static/portal.css``: no credentials.

Background work (one task each, every pass bounded): connect and re-read licence revocations and reporting
tokens; start the access-trail producer; fold new audit rows into the rollups; advance the incremental chain
check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.reporter import api, chainstatus, login, openapi, portal, tokenadmin
from services.reporter.audit_trail import AccessTrail
from services.reporter.authz import AccessControl, unguarded_routes
from services.reporter.credentials import Authenticator
from services.reporter.db import create_reporting_pool
from services.reporter.oidc import OidcVerifier
from services.reporter.params import BadRequest
from services.reporter.rollup import catch_up, pending_tenants
from services.reporter.settings import ReporterSettings
from services.reporter.state import DatabaseUnavailable, ReporterState
from shared.clock import Clock, SystemClock
from shared.db.errors import is_retryable_db_error
from shared.enrollment import pinned_keys
from shared.kafka import MessageProducer, make_producer, start_clients
from shared.licensing import LicenseVerifier
from shared.messages.auth import MessageKey, load_signing_key
from shared.pipeline import Backoff, describe
from shared.reporting_tokens import active_tokens
from shared.witness import Witness, WitnessError

log = logging.getLogger("reporter")

VERSION = "1"
PoolFactory = Callable[[ReporterSettings], Awaitable[asyncpg.Pool]]
ProducerFactory = Callable[[ReporterSettings], Any]
# Most rows one background pass folds for a tenant before it moves on to the next tenant.
_FOLD_ROWS_PER_PASS = 1_000_000


class SecurityHeaders:
    """Reports are sensitive: never cached by intermediaries, never framed, no script or remote content."""

    _HEADERS = (
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", b"default-src 'none'; style-src 'self'; img-src 'self' data:; "
                                     b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k, v) for k, v in self._HEADERS if k not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)


def _is_portal(request: Request) -> bool:
    return request.url.path.startswith("/portal")


def _render_error(scope: Scope, status: int, message: str) -> Response:
    return portal.render_error(Request(scope), status, message)


def _error(request: Request, status: int, message: str, reason: str) -> Response:
    if _is_portal(request):
        return portal.render_error(request, status, message)
    return JSONResponse({"error": message, "reason": reason}, status_code=status)


async def _bad_request(request: Request, exc: Exception) -> Response:
    return _error(request, 400, str(exc), "bad_request")


async def _unavailable(request: Request, exc: Exception) -> Response:
    response = _error(request, 503, "the reporting database is unavailable; retry shortly", "unavailable")
    response.headers["Retry-After"] = "2"
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(request, exc.status_code, str(exc.detail), "http_error")


async def _internal_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, asyncpg.QueryCanceledError) or is_retryable_db_error(exc):
        log.warning("database unavailable or query cancelled", extra={"error": describe(exc)})
        return await _unavailable(request, exc)
    log.exception("unhandled error", exc_info=exc)
    return _error(request, 500, "internal error", "internal_error")


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    state = ReporterState.of(request)
    checks = {
        "database": state.pool is not None,
        "licence_keys": bool(state.verifier.issuer_keys),
        "revocations": state.revocations_loaded and state.tokens.loaded,
        "access_trail": state.trail.ready,
        "accepting": not state.draining,
    }
    return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)


async def openapi_document(request: Request) -> Response:
    return JSONResponse(openapi.document(VERSION))


async def default_pool_factory(settings: ReporterSettings) -> asyncpg.Pool:
    return await create_reporting_pool(settings.database_url, size=settings.reporter_db_pool_size,
                                       statement_timeout_ms=settings.reporter_statement_timeout_ms)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _connect_and_refresh_revocations(state: ReporterState, pool_factory: PoolFactory,
                                           stop: asyncio.Event) -> None:
    """Connects (retrying: the portal starts while PostgreSQL is away), then keeps the licence revocation
    list and the active reporting tokens fresh. No credential is accepted before both are loaded once."""
    backoff = Backoff(0.5, 10.0)
    while not stop.is_set():
        try:
            if state.pool is None:
                state.pool = await pool_factory(state.settings)
                log.info("database connected")
            rows = await state.pool.fetch("SELECT license_id FROM licenses WHERE revoked_at IS NOT NULL")
            state.verifier.replace_revocations(row["license_id"] for row in rows)
            async with state.pool.acquire() as conn:
                state.tokens.replace(await active_tokens(conn))
            state.revocations_loaded = True
            backoff.reset()
            await _sleep(stop, state.settings.revocation_refresh_seconds)
        except Exception as exc:  # the last good list stays in force while the database is away
            log.warning("could not connect or refresh licence revocations and tokens",
                        extra={"error": describe(exc)})
            await backoff.sleep(stop)


async def _background(name: str, state: ReporterState, stop: asyncio.Event, interval: float,
                      work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> None:
    while not stop.is_set():
        if state.pool is not None:
            try:
                async with state.pool.acquire() as conn:
                    await work(conn)
            except Exception as exc:
                level = logging.WARNING if is_retryable_db_error(exc) else logging.ERROR
                log.log(level, f"{name} pass failed", extra={"error": describe(exc)})
        await _sleep(stop, interval)


def fold_pass(settings: ReporterSettings) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    async def work(conn: asyncpg.Connection) -> None:
        for tenant in await pending_tenants(conn):
            # Until current (a backlog drains at full speed), one transaction per batch of rows.
            await catch_up(conn, tenant, _FOLD_ROWS_PER_PASS, wait=False,
                           batch_rows=settings.reporter_rollup_batch_rows)

    return work


def verify_pass(settings: ReporterSettings, clock: Clock,
                witness: Witness | None = None) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    async def work(conn: asyncpg.Connection) -> None:
        pinned = None
        if witness is not None:
            try:
                # The keys an operator pinned, as auditctl verify trusts them; the database's own otherwise.
                pinned = await pinned_keys(witness) or None
            except (WitnessError, OSError, ValueError) as exc:
                log.warning("cannot read the pinned keys of the witness", extra={"error": describe(exc)})
        book = await chainstatus.key_book(conn, pinned)
        for tenant in await chainstatus.tenants_to_check(conn):
            await chainstatus.advance(conn, tenant, book, settings.reporter_verify_batch_rows, clock.now(),
                                      settings.reporter_rescan_batch_rows)

    return work


def default_producer_factory(settings: ReporterSettings) -> Any:
    # The whole connection (TLS, SASL), not only the bootstrap servers: the reporter writes the canonical
    # topic as a principal of its own (deploy/kafka/principals.sh).
    return make_producer(settings.kafka_connection(), settings.kafka_max_message_bytes, linger_ms=0)


async def _start_trail(state: ReporterState, producer: Any, stop: asyncio.Event) -> None:
    """Starts the access-trail producer, waiting out a broker that is not up yet."""
    if await start_clients(producer, stop=stop):
        started: MessageProducer = producer
        state.trail.producer = started
        log.info("access trail connected to the broker")


def create_app(
    settings: ReporterSettings,
    verifier: LicenseVerifier,
    *,
    clock: Clock | None = None,
    pool_factory: PoolFactory = default_pool_factory,
    producer_factory: ProducerFactory = default_producer_factory,
    background_work: bool = True,
    access_key: MessageKey | None = None,
) -> Starlette:
    """The ASGI app. ``background_work=False`` leaves folding and chain checks to the caller (tests, bench);
    requests still fold their own tenant's pending rows first. ``access_key`` authenticates the access
    events; by default the first key of ``REPORTER_ACCESS_AUTH_KEY_FILE``."""
    clock = clock or SystemClock()
    access_key = access_key or load_signing_key(settings.reporter_access_auth_key_file,
                                                "REPORTER_ACCESS_AUTH_KEY_FILE")
    trail = AccessTrail(settings.topic_canonical, settings.reporter_access_audit_timeout_seconds, clock, access_key)
    state = ReporterState(settings=settings, verifier=verifier, clock=clock, trail=trail,
                          oidc=OidcVerifier(settings, clock) if settings.oidc_enabled else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        producer = producer_factory(settings)
        state.tasks.append(asyncio.create_task(_connect_and_refresh_revocations(state, pool_factory, stop)))
        state.tasks.append(asyncio.create_task(_start_trail(state, producer, stop)))
        if background_work:
            state.tasks.append(asyncio.create_task(_background(
                "rollup fold", state, stop, settings.reporter_rollup_interval_seconds, fold_pass(settings))))
            state.tasks.append(asyncio.create_task(_background(
                "chain check", state, stop, settings.reporter_verify_interval_seconds,
                verify_pass(settings, clock, state.witness))))
        try:
            yield
        finally:
            state.draining = True
            stop.set()
            for task in state.tasks:
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
            state.trail.producer = None
            with contextlib.suppress(Exception):  # a producer that never started has nothing to flush
                await producer.stop()
            if state.pool is not None:
                await state.pool.close()

    api_routes = [
        Route("/whoami", api.whoami),
        Route("/audit/events", api.audit_events),
        Route("/audit/records/{record_id:int}/proof", api.record_proof),
        Route("/audit/consistency", api.consistency),
        Route("/audit/tree-heads", api.tree_heads),
        Route("/audit/verify", api.verify_status),
        Route("/sessions", api.list_sessions),
        Route("/sessions/{session_id:path}", api.session_summary),
        Route("/usage", api.usage),
        Route("/completeness", api.completeness_endpoint),
        Route("/signing-keys", api.signing_keys),
        Route("/tokens", tokenadmin.api_tokens, methods=["GET", "POST"]),
        Route("/tokens/{token_id}/revoke", tokenadmin.api_revoke, methods=["POST"]),
    ]
    portal_routes = [
        Route("/", portal.home),
        Route("/login", login.login_page),
        Route("/login", login.login_submit, methods=["POST"]),
        Route("/logout", login.logout, methods=["POST"]),
        Route("/oidc/start", login.oidc_start),
        Route("/oidc/callback", login.oidc_callback),
        Route("/events", portal.events_page),
        Route("/sessions", portal.sessions_page),
        Route("/sessions/{session_id:path}", portal.session_page),
        Route("/usage", portal.usage_page),
        Route("/completeness", portal.completeness_page),
        Route("/chain", portal.chain_page),
        Route("/records/{record_id:int}/proof", portal.proof_page),
        Route("/tokens", tokenadmin.tokens_page, methods=["GET", "POST"]),
        Route("/tokens/{token_id}/revoke", tokenadmin.portal_revoke, methods=["POST"]),
    ]
    app = Starlette(
        routes=[
            Route("/", portal.home),
            Route("/portal", portal.home),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/openapi.json", openapi_document),
            Route("/static/portal.css", portal.stylesheet),
            Mount(openapi.API_PREFIX, routes=api_routes),
            Mount("/portal", routes=portal_routes),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(AccessControl, authenticate=Authenticator(state), record_access=trail.record,
                       render_error=_render_error),
        ],
        lifespan=lifespan,
        exception_handlers={
            BadRequest: _bad_request,
            DatabaseUnavailable: _unavailable,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    unguarded = unguarded_routes(app.routes)
    if unguarded:
        raise RuntimeError(f"routes without an access rule in services/reporter/authz.py RULES: {unguarded}")
    app.state.reporter = state
    return app
