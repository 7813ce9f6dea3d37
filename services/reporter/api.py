"""The JSON endpoints. The tenant is always the credential's; no parameter can name another. Whether the caller
may use an endpoint at all is decided before it runs (services/reporter/authz.py); what its role sees inside
the answer, here, through services/reporter/views.py."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from services.reporter import completeness, params, queries, views
from services.reporter.authz import note_disclosure
from services.reporter.responses import JSON
from services.reporter.rollup import catch_up, fold_state
from services.reporter.state import ReporterState, principal_of, tenant_of
from shared import proofs

_MAX_SESSION_ID = 512
USAGE_DEFAULT_DAYS = 30
# Groups per page: the top 100 users (or models, or days) by default, like any other list endpoint.
USAGE_DEFAULT_GROUPS = 100
USAGE_MAX_GROUPS = 10_000


def feed_filters(request: Request) -> queries.FeedFilters:
    q = request.query_params
    since, until = params.time_range(q)
    return views.scoped_feed(principal_of(request), queries.FeedFilters(
        plane=params.text(q, "plane"),
        event_type=params.text(q, "event_type"),
        user=params.text(q, "user"),
        session=params.text(q, "session"),
        decision=params.text(q, "decision"),
        tool=params.text(q, "tool"),
        since=since,
        until=until,
    ))


async def audit_events(request: Request) -> Response:
    state = ReporterState.of(request)
    filters = feed_filters(request)
    limit = params.page_size(request.query_params, state.settings.reporter_page_size,
                             state.settings.reporter_max_page_size)
    cursor = params.cursor(request.query_params, int)
    async with state.connection() as conn:
        items, following = await queries.feed(conn, tenant_of(request), filters, cursor, limit)
        by_session = await feed_completeness(conn, tenant_of(request), items)
    return JSON({"items": views.feed_items(request, items), "next_cursor": following.encode() if following else None,
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
                                              until=until, cursor=params.cursor(q, str), limit=limit,
                                              own_email=principal_of(request).own_email)
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
        summary = await queries.session_summary(conn, tenant_of(request), session_id,
                                                principal_of(request).own_email)
    if summary is None:
        return JSON({"error": "no such session"}, status_code=404)
    return JSON(views.session_summary(request, summary))


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


async def proof_document(request: Request) -> dict[str, Any] | None:
    """The row's proof with its Merkle inclusion proof against the newest signed tree head (or the one of
    ``?tree_size=``); None if the tenant has no such record."""
    state = ReporterState.of(request)
    record_id = int(request.path_params["record_id"])
    if record_id > params.INT64_MAX:  # ids are bigint: such a record cannot exist (and would not bind)
        return None
    size = params.positive_int(request.query_params, "tree_size")
    tenant = tenant_of(request)
    async with state.connection() as conn:
        document = await queries.proof(conn, tenant, record_id, state.witness)
        if document is None:
            return None
        try:
            document.update(await proofs.record_inclusion(conn, tenant, document["chain_seq"], size))
        except proofs.ProofUnavailable as exc:
            raise params.BadRequest("tree_size", str(exc)) from None
    return document


async def record_proof(request: Request) -> Response:
    document = await proof_document(request)
    if document is None:
        return JSON({"error": "no such record"}, status_code=404)
    note_disclosure(request.scope, record_ids=[document["record_id"]], rows=1)
    return JSON(document)


async def consistency(request: Request) -> Response:
    """RFC 9162 2.1.4 consistency proof between the tenant's trees of ``first`` and ``second`` leaves, with
    the signed tree heads of those sizes where there are any."""
    state = ReporterState.of(request)
    q = request.query_params
    first = params.positive_int(q, "first", required=True)
    second = params.positive_int(q, "second", required=True)
    assert first is not None and second is not None
    if first > second:
        raise params.BadRequest("first", "must not exceed second")
    async with state.connection() as conn:
        try:
            return JSON(await proofs.consistency_document(conn, tenant_of(request), first, second))
        except proofs.ProofUnavailable as exc:
            raise params.BadRequest("second", str(exc)) from None


async def tree_heads(request: Request) -> Response:
    """The tenant's signed tree heads larger than ``?after=`` (default all), smallest first, a page at a time."""
    state = ReporterState.of(request)
    after = params.positive_int(request.query_params, "after") or 0
    async with state.connection() as conn:
        heads = await proofs.tree_heads(conn, tenant_of(request), after)
    return JSON({"items": [head.to_dict() for head in heads],
                 "next_after": heads[-1].tree_size if len(heads) == proofs.TREE_HEADS_PAGE else None})


async def verify_status(request: Request) -> Response:
    state = ReporterState.of(request)
    async with state.connection() as conn:
        tenants = await queries.chain_status(conn, tenant_of(request), state.witness)
        return JSON({"tenants": tenants})


async def signing_keys(request: Request) -> Response:
    state = ReporterState.of(request)
    async with state.connection() as conn:
        return JSON({"keys": await queries.signing_keys(conn)})


async def whoami(request: Request) -> Response:
    principal = principal_of(request)
    return JSON({
        "org_id": principal.org_id, "tenant_id": principal.tenant_id, "role": principal.role,
        "subject": principal.subject, "credential": principal.credential, "user_email": principal.user_email,
        "sees_content": principal.sees_content, "own_rows_only": principal.own_email is not None,
        "sees_access_rows": principal.sees_access_rows,
    })
