"""The JSON endpoints. The tenant is always the licence's; no parameter can name another."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from services.reporter import completeness, params, queries
from services.reporter.responses import JSON
from services.reporter.rollup import catch_up, fold_state
from services.reporter.state import ReporterState, tenant_of

_MAX_SESSION_ID = 512
USAGE_DEFAULT_DAYS = 30
# Groups per page: the top 100 users (or models, or days) by default, like any other list endpoint.
USAGE_DEFAULT_GROUPS = 100
USAGE_MAX_GROUPS = 10_000


def feed_filters(request: Request) -> queries.FeedFilters:
    q = request.query_params
    since, until = params.time_range(q)
    return queries.FeedFilters(
        plane=params.text(q, "plane"),
        event_type=params.text(q, "event_type"),
        user=params.text(q, "user"),
        session=params.text(q, "session"),
        decision=params.text(q, "decision"),
        tool=params.text(q, "tool"),
        since=since,
        until=until,
    )


async def audit_events(request: Request) -> Response:
    state = ReporterState.of(request)
    filters = feed_filters(request)
    limit = params.page_size(request.query_params, state.settings.reporter_page_size,
                             state.settings.reporter_max_page_size)
    cursor = params.cursor(request.query_params, int)
    async with state.connection() as conn:
        items, following = await queries.feed(conn, tenant_of(request), filters, cursor, limit)
        by_session = await feed_completeness(conn, tenant_of(request), items)
    return JSON({"items": items, "next_cursor": following.encode() if following else None,
                 "session_completeness": by_session})


async def feed_completeness(conn: Any, tenant: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Completeness of each session a page of the feed shows, so a reader sees what never arrived."""
    return await completeness.sessions(conn, tenant, [i["session_id"] for i in items if i["session_id"]])


async def sessions_for_request(conn: Any, request: Request) -> tuple[list[dict[str, Any]], Any]:
    """One page of the session list as the request's filters ask; the API and the portal both serve it."""
    state = ReporterState.of(request)
    q = request.query_params
    since, until = params.time_range(q)
    limit = params.page_size(q, state.settings.reporter_page_size, state.settings.reporter_max_page_size)
    tenant = tenant_of(request)
    if state.settings.reporter_inline_fold_rows:
        await catch_up(conn, tenant, state.settings.reporter_inline_fold_rows, wait=False)
    items: list[dict[str, Any]]
    items, following = await queries.sessions(conn, tenant, user=params.text(q, "user"), since=since,
                                              until=until, cursor=params.cursor(q, str), limit=limit)
    figures = await completeness.sessions(conn, tenant, [item["session_id"] for item in items])
    for item in items:
        item["completeness"] = figures.get(item["session_id"])
    return items, following


async def list_sessions(request: Request) -> Response:
    state = ReporterState.of(request)
    async with state.connection() as conn:
        items, following = await sessions_for_request(conn, request)
        folded, head = await fold_state(conn, tenant_of(request))
    return JSON({
        "items": items,
        "next_cursor": following.encode() if following else None,
        "rollup": {"folded_through_seq": folded, "head_seq": head, "current": folded >= head},
    })


def session_id_of(request: Request) -> str:
    session_id = str(request.path_params["session_id"])
    if not session_id or len(session_id) > _MAX_SESSION_ID:
        raise params.BadRequest("session_id", f"must be 1 to {_MAX_SESSION_ID} characters")
    return session_id


async def session_summary(request: Request) -> Response:
    state = ReporterState.of(request)
    session_id = session_id_of(request)
    async with state.connection() as conn:
        summary = await queries.session_summary(conn, tenant_of(request), session_id)
    if summary is None:
        return JSON({"error": "no such session"}, status_code=404)
    return JSON(summary)


async def usage_report(request: Request, group_by: str | None = None, limit: int | None = None) -> dict[str, Any]:
    state = ReporterState.of(request)
    q = request.query_params
    grouping = group_by or params.choice(q, "group_by", queries.GROUPINGS, "user")
    window = params.day_window(q, state.clock.now(), USAGE_DEFAULT_DAYS, state.settings.reporter_max_usage_days)
    if limit is None:
        limit = params.page_size(q, USAGE_DEFAULT_GROUPS, USAGE_MAX_GROUPS)
    offset = params.offset(q)
    tenant = tenant_of(request)
    if state.settings.reporter_inline_fold_rows:
        async with state.connection() as conn:
            await catch_up(conn, tenant, state.settings.reporter_inline_fold_rows, wait=False)
    return await queries.usage(state.connection, tenant, grouping, window, limit, offset)


async def usage(request: Request) -> Response:
    return JSON(await usage_report(request))


async def completeness_report(request: Request) -> dict[str, Any]:
    """Per-tenant and per-user completeness over whole UTC days (default: the last 30), worst users first."""
    state = ReporterState.of(request)
    q = request.query_params
    days = params.day_window(q, state.clock.now(), USAGE_DEFAULT_DAYS, state.settings.reporter_max_usage_days)
    limit = params.page_size(q, USAGE_DEFAULT_GROUPS, USAGE_MAX_GROUPS)
    async with state.connection() as conn:
        report = await completeness.window(conn, tenant_of(request), days.since, days.until, limit=limit,
                                           offset=params.offset(q))
    return {"since": days.since.isoformat(), "until": days.until.isoformat(), **report}


async def completeness_endpoint(request: Request) -> Response:
    return JSON(await completeness_report(request))


async def record_proof(request: Request) -> Response:
    state = ReporterState.of(request)
    record_id = int(request.path_params["record_id"])
    async with state.connection() as conn:
        document = await queries.proof(conn, tenant_of(request), record_id)
    if document is None:
        return JSON({"error": "no such record"}, status_code=404)
    return JSON(document)


async def verify_status(request: Request) -> Response:
    state = ReporterState.of(request)
    async with state.connection() as conn:
        return JSON({"tenants": await queries.chain_status(conn, tenant_of(request))})


async def signing_keys(request: Request) -> Response:
    state = ReporterState.of(request)
    async with state.connection() as conn:
        return JSON({"keys": await queries.signing_keys(conn)})
