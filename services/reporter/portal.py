"""The portal: server-rendered pages over the same queries as the API. No script, no build step.

Signing in (a reporting token, or the organisation's identity provider) is services/reporter/login.py; who
may open which page is services/reporter/authz.py. Pages only read, except the sign-out and token forms,
which carry a CSRF token.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from services.reporter import api, charts, params, queries, views
from services.reporter.authz import Permission, Principal, note_disclosure
from services.reporter.state import ReporterState, principal_of, tenant_of
from services.reporter.templates import STYLESHEET, TEMPLATES
from shared.proofcheck import check_inclusion

EVENT_TYPES = ("user_prompt", "tool_decision", "tool_result", "api_request", "api_error", "assistant_response")
_EXCERPT_FIELDS = ("prompt", "error", "tool_parameters", "tool_input", "response")
_EXCERPT_CHARS = 300
_TOP_USERS = 20
_USER_ROWS = 200

templates = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.DictLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined,
))


_NAV = (("/portal/events", "Decisions", Permission.READ_EVENTS),
        ("/portal/sessions", "Sessions", Permission.READ_SESSIONS),
        ("/portal/usage", "Usage", Permission.READ_USAGE),
        ("/portal/completeness", "Completeness", Permission.READ_COMPLETENESS),
        ("/portal/chain", "Chain", Permission.READ_CHAIN),
        ("/portal/tokens", "Tokens", Permission.MANAGE_TOKENS))


def navigation(principal: Principal) -> list[tuple[str, str]]:
    return [(href, label) for href, label, permission in _NAV if principal.may(permission)]


def render(request: Request, name: str, section: str, context: dict[str, Any], status_code: int = 200) -> Response:
    me = principal_of(request)
    return templates.TemplateResponse(
        request, name, {"org": me.org_id, "tenant": me.tenant_id, "section": section, "me": me,
                        "nav": navigation(me), "csrf": me.csrf_token, **context},
        status_code=status_code,
    )


def render_error(request: Request, status_code: int, message: str) -> Response:
    return templates.TemplateResponse(request, "error.html", {"status": status_code, "message": message},
                                      status_code=status_code)


def session_href(session_id: str) -> str:
    return "/portal/sessions/" + quote(session_id, safe="")


def _next_href(request: Request, path: str, cursor: params.Cursor | None) -> str | None:
    if cursor is None:
        return None
    kept = {k: v for k, v in request.query_params.items() if v and k != "cursor"}
    return f"{path}?{urlencode({**kept, 'cursor': cursor.encode()})}"


def _excerpt(item: dict[str, Any]) -> str:
    if item.get("erasure"):
        return str(item["erasure"]["text"])
    if item.get("content") is None and item.get("content_lengths"):
        lengths = item["content_lengths"]
        return ", ".join(f"{name}: {lengths[name]} characters" for name in _EXCERPT_FIELDS if name in lengths)
    content = item.get("content") or {}
    for name in _EXCERPT_FIELDS:
        text = str(content.get(name) or "")
        if text:
            return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 1] + "…"
    return ""


async def home(request: Request) -> Response:
    return RedirectResponse("/portal/events", status_code=302)  # signed out, that page sends on to the login


async def stylesheet(request: Request) -> Response:
    return Response(STYLESHEET, media_type="text/css", headers={"Cache-Control": "public, max-age=300"})


async def events_page(request: Request) -> Response:
    state = ReporterState.of(request)
    filters = api.feed_filters(request)
    limit = params.page_size(request.query_params, state.settings.reporter_page_size,
                             state.settings.reporter_max_page_size)
    cursor = params.cursor(request.query_params, int)
    async with state.connection() as conn:
        items, following = await queries.feed(conn, tenant_of(request), filters, cursor, limit)
        by_session = await api.feed_completeness(conn, tenant_of(request), items)
    for item in views.feed_items(request, items):
        item["session_href"] = session_href(item["session_id"]) if item["session_id"] else None
        item["session_completeness"] = by_session.get(item["session_id"]) if item["session_id"] else None
        item["excerpt"] = _excerpt(item)
    return render(request, "events.html", "Decisions", {
        "items": items,
        "f": filters,
        "since": params.text(request.query_params, "since"),
        "until": params.text(request.query_params, "until"),
        "event_types": EVENT_TYPES,
        "next_href": _next_href(request, "/portal/events", following),
    })


async def sessions_page(request: Request) -> Response:
    state = ReporterState.of(request)
    async with state.connection() as conn:
        items, following = await api.sessions_for_request(conn, request)
    for item in items:
        item["href"] = session_href(item["session_id"])
    q = request.query_params
    return render(request, "sessions.html", "Sessions", {
        "items": items, "user": params.text(q, "user"), "since": params.text(q, "since"),
        "until": params.text(q, "until"), "next_href": _next_href(request, "/portal/sessions", following),
    })


def _token_series(models: list[dict[str, Any]]) -> list[tuple[str, list[float]]]:
    return [
        (label, [float(m["tokens"][name] or 0) for m in models])
        for name, label in (("input", "input"), ("output", "output"), ("cache_read", "cache read"),
                            ("cache_creation", "cache creation"))
    ]


async def session_page(request: Request) -> Response:
    state = ReporterState.of(request)
    session_id = api.session_id_of(request)
    async with state.connection() as conn:
        summary = await queries.session_summary(conn, tenant_of(request), session_id,
                                                principal_of(request).own_email)
    if summary is None:
        return render_error(request, 404, "No such session for this tenant.")
    summary = views.session_summary(request, summary)
    models = [m for m in summary["api"]["models"]]
    chart = charts.stacked_columns("session-tokens-by-model", "Tokens by model in this session",
                                   [m["model"] or "unknown" for m in models], _token_series(models))
    return render(request, "session.html", "Sessions", {"s": summary, "model_chart": chart})


async def usage_page(request: Request) -> Response:
    by_user = await api.usage_report(request, "user", _USER_ROWS)
    by_model = await api.usage_report(request, "model", api.USAGE_MAX_GROUPS)
    by_day = await api.usage_report(request, "day", api.USAGE_MAX_GROUPS)
    users = by_user["groups"]
    cost_per_user = charts.horizontal_bars(
        "cost-per-user", "Cost per user (USD)",
        [(g["key"] or "unknown", float(g["cost"])) for g in users[:_TOP_USERS]], label=charts.dollars,
    )
    models = [g for g in by_model["groups"] if g["key"]]
    tokens_by_model = charts.stacked_columns("tokens-by-model", "Tokens by model",
                                             [g["key"] for g in models], _token_series(models))
    window = params.day_window(request.query_params, ReporterState.of(request).clock.now(),
                               api.USAGE_DEFAULT_DAYS, ReporterState.of(request).settings.reporter_max_usage_days)
    cost_by_day = {g["key"]: Decimal(g["cost"]) for g in by_day["groups"]}
    days = [window.first_day + timedelta(days=n) for n in range((window.end_day - window.first_day).days)]
    cost_over_time = charts.line("cost-over-time", "Cost per day (USD)",
                                 [(d.isoformat(), float(cost_by_day.get(d.isoformat(), 0))) for d in days],
                                 label=charts.dollars)
    return render(request, "usage.html", "Usage", {
        "totals": by_user["totals"],
        "users": users,
        "total_users": by_user["total_groups"],
        "since": params.text(request.query_params, "since") or "",
        "until": params.text(request.query_params, "until") or "",
        "window_since": by_user["since"],
        "window_until": by_user["until"],
        "cost_per_user": cost_per_user,
        "tokens_by_model": tokens_by_model,
        "cost_over_time": cost_over_time,
    })


async def completeness_page(request: Request) -> Response:
    report = await api.completeness_report(request)
    return render(request, "completeness.html", "Completeness", {
        "r": report,
        "since": params.text(request.query_params, "since") or "",
        "until": params.text(request.query_params, "until") or "",
    })


async def chain_page(request: Request) -> Response:
    state = ReporterState.of(request)
    async with state.connection() as conn:
        tenants = await queries.chain_status(conn, tenant_of(request), state.witness)
        keys = await queries.signing_keys(conn)
    return render(request, "chain.html", "Chain", {"tenants": tenants, "keys": keys})


async def proof_page(request: Request) -> Response:
    """A row's inclusion proof, checked against the keys this server publishes, with a download link."""
    document = await api.proof_document(request)
    if document is None:
        return render_error(request, 404, "No such record.")
    state = ReporterState.of(request)
    async with state.connection() as conn:
        keys = [bytes(row["public_key"]) for row in await conn.fetch("SELECT public_key FROM signing_keys")]
    checks = check_inclusion(document, keys)
    note_disclosure(request.scope, record_ids=[document["record_id"]], rows=1)
    download = f"/api/v1/audit/records/{document['record_id']}/proof"
    if request.query_params.get("tree_size"):
        download += "?" + urlencode({"tree_size": request.query_params["tree_size"]})
    return render(request, "proof.html", "Events", {
        "proof": document, "checks": checks, "verified": bool(checks) and all(c.ok for c in checks),
        "pending": document["inclusion"] is None,
        "download": download,
    })
