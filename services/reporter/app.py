"""The reporting service as plain ASGI parts: the licence auth backend, a lifespan owning the pool and the
background work, the JSON API under /api/v1, the portal under /portal.

Routes:

- ``GET /api/v1/...``: the reporting API (see services/reporter/openapi.py), HTTP Basic ``org:licence-key``
  with the ``reporting`` entitlement; JSON errors.
- ``GET /portal/...``: the same reports as HTML; the browser's own Basic prompt signs in.
- ``GET /openapi.json``, ``GET /healthz``, ``GET /readyz``, ``GET /static/portal.css``: no credentials.

Background work (one task each, every pass bounded): connect and re-read licence revocations; fold new
audit rows into the rollups; advance the incremental chain check.
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
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.receiver.auth import CredentialsRefused, LicenseAuthBackend
from services.reporter import api, chainstatus, openapi, portal
from services.reporter.db import create_reporting_pool
from services.reporter.params import BadRequest
from services.reporter.rollup import catch_up, pending_tenants
from services.reporter.settings import ReporterSettings
from services.reporter.state import DatabaseUnavailable, ReporterState
from shared.clock import Clock, SystemClock
from shared.db.errors import is_retryable_db_error
from shared.licensing import REPORTING, LicenseVerifier
from shared.pipeline import Backoff, describe

log = logging.getLogger("reporter")

VERSION = "1"
PoolFactory = Callable[[ReporterSettings], Awaitable[asyncpg.Pool]]
# Most rows one background pass folds for a tenant before it moves on to the next tenant.
_FOLD_ROWS_PER_PASS = 1_000_000
_API_REALM = 'Basic realm="audit-reporting", charset="UTF-8"'
_PORTAL_REALM = 'Basic realm="audit-portal", charset="UTF-8"'


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


def _is_portal(conn: HTTPConnection) -> bool:
    return conn.url.path.startswith("/portal")


def _auth_refused(conn: HTTPConnection, exc: Exception) -> Response:
    forbidden = isinstance(exc, CredentialsRefused) and exc.forbidden
    reason = exc.reason if isinstance(exc, CredentialsRefused) else "unauthenticated"
    status = 403 if forbidden else 401
    headers = {} if forbidden else {"WWW-Authenticate": _PORTAL_REALM if _is_portal(conn) else _API_REALM}
    if _is_portal(conn):
        response = portal.templates.TemplateResponse(
            Request(conn.scope), "error.html", {"status": status, "message": str(exc)}, status_code=status
        )
        response.headers.update(headers)
        return response
    return JSONResponse({"error": str(exc), "reason": reason}, status_code=status, headers=headers)


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
        "revocations": state.revocations_loaded,
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
    """Connects (retrying: the portal starts while PostgreSQL is away), then keeps the revocation list fresh."""
    backoff = Backoff(0.5, 10.0)
    while not stop.is_set():
        try:
            if state.pool is None:
                state.pool = await pool_factory(state.settings)
                log.info("database connected")
            rows = await state.pool.fetch("SELECT license_id FROM licenses WHERE revoked_at IS NOT NULL")
            state.verifier.replace_revocations(row["license_id"] for row in rows)
            state.revocations_loaded = True
            backoff.reset()
            await _sleep(stop, state.settings.revocation_refresh_seconds)
        except Exception as exc:  # the last good list stays in force while the database is away
            log.warning("could not connect or refresh licence revocations", extra={"error": describe(exc)})
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


def verify_pass(settings: ReporterSettings, clock: Clock) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    async def work(conn: asyncpg.Connection) -> None:
        book = await chainstatus.key_book(conn)
        for tenant in await chainstatus.tenants_to_check(conn):
            await chainstatus.advance(conn, tenant, book, settings.reporter_verify_batch_rows, clock.now(),
                                      settings.reporter_rescan_batch_rows)

    return work


def create_app(
    settings: ReporterSettings,
    verifier: LicenseVerifier,
    *,
    clock: Clock | None = None,
    pool_factory: PoolFactory = default_pool_factory,
    background_work: bool = True,
) -> Starlette:
    """The ASGI app. ``background_work=False`` leaves folding and chain checks to the caller (tests, bench);
    requests still fold their own tenant's pending rows first."""
    clock = clock or SystemClock()
    state = ReporterState(settings=settings, verifier=verifier, clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        state.tasks.append(asyncio.create_task(_connect_and_refresh_revocations(state, pool_factory, stop)))
        if background_work:
            state.tasks.append(asyncio.create_task(_background(
                "rollup fold", state, stop, settings.reporter_rollup_interval_seconds, fold_pass(settings))))
            state.tasks.append(asyncio.create_task(_background(
                "chain check", state, stop, settings.reporter_verify_interval_seconds, verify_pass(settings, clock))))
        try:
            yield
        finally:
            state.draining = True
            stop.set()
            for task in state.tasks:
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
            if state.pool is not None:
                await state.pool.close()

    backend = LicenseAuthBackend(verifier, clock, REPORTING)
    auth = [Middleware(AuthenticationMiddleware, backend=backend, on_error=_auth_refused)]
    api_routes = [
        Route("/audit/events", api.audit_events),
        Route("/audit/records/{record_id:int}/proof", api.record_proof),
        Route("/audit/verify", api.verify_status),
        Route("/sessions", api.list_sessions),
        Route("/sessions/{session_id:path}", api.session_summary),
        Route("/usage", api.usage),
        Route("/completeness", api.completeness_endpoint),
        Route("/signing-keys", api.signing_keys),
    ]
    portal_routes = [
        Route("/", portal.home),
        Route("/events", portal.events_page),
        Route("/sessions", portal.sessions_page),
        Route("/sessions/{session_id:path}", portal.session_page),
        Route("/usage", portal.usage_page),
        Route("/completeness", portal.completeness_page),
        Route("/chain", portal.chain_page),
    ]
    app = Starlette(
        routes=[
            Route("/", portal.home),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/openapi.json", openapi_document),
            Route("/static/portal.css", portal.stylesheet),
            Mount(openapi.API_PREFIX, routes=api_routes, middleware=auth),
            Mount("/portal", routes=portal_routes, middleware=auth),
        ],
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan,
        exception_handlers={
            BadRequest: _bad_request,
            DatabaseUnavailable: _unavailable,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.reporter = state
    return app
