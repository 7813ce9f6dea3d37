"""Admins manage their tenant's reporting tokens: the API (``/api/v1/tokens``) and the portal's Tokens page.
A token is shown once, in the answer that issued it; only its digest is kept (shared/reporting_tokens.py)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from services.reporter.portal import render
from services.reporter.responses import JSON
from services.reporter.state import ReporterState, principal_of
from shared.reporting_tokens import ROLES, ReportingToken, issue_token, list_tokens, revoke_token

_MAX_BODY = 16 * 1024
_MAX_DAYS = 3650


class TokenRequestInvalid(ValueError):
    pass


def _grant(fields: dict[str, Any]) -> tuple[str, str | None, int | None, str]:
    role = fields.get("role")
    email = fields.get("user_email") or None
    days = fields.get("expires_days", fields.get("expires_in_days"))
    description = fields.get("description") or ""
    if not isinstance(role, str) or role not in ROLES:
        raise TokenRequestInvalid(f"role must be one of {', '.join(ROLES)}")
    if email is not None and not isinstance(email, str):
        raise TokenRequestInvalid("user_email must be a string")
    if not isinstance(description, str) or len(description) > 200:
        raise TokenRequestInvalid("description must be a string of at most 200 characters")
    if days in (None, ""):
        return role, email, None, description
    try:
        number = int(days)
    except (TypeError, ValueError):
        raise TokenRequestInvalid("expires_days must be a whole number of days") from None
    if not 1 <= number <= _MAX_DAYS:
        raise TokenRequestInvalid(f"expires_days must be 1 to {_MAX_DAYS}")
    return role, email, number, description


async def _issue(request: Request, fields: dict[str, Any]) -> tuple[ReportingToken, str]:
    state = ReporterState.of(request)
    me = principal_of(request)
    role, email, days, description = _grant(fields)
    now = state.clock.now()
    async with state.connection() as conn:
        try:
            row, token = await issue_token(
                conn, tenant_id=me.tenant_id, org_id=me.org_id, role=role, user_email=email,
                expires_at=None if days is None else now + timedelta(days=days), created_by=me.subject,
                description=description,
            )
        except ValueError as exc:
            raise TokenRequestInvalid(str(exc)) from None
    state.tokens.add(row)
    return row, token


async def _revoke(request: Request) -> str:
    state = ReporterState.of(request)
    me = principal_of(request)
    token_id = str(request.path_params["token_id"])
    async with state.connection() as conn:
        outcome = await revoke_token(conn, token_id, revoked_by=me.subject, tenant_id=me.tenant_id)
    state.tokens.discard(token_id)
    return outcome


async def _tokens(request: Request) -> list[dict[str, Any]]:
    state = ReporterState.of(request)
    async with state.connection() as conn:
        rows = await list_tokens(conn, tenant_id=principal_of(request).tenant_id)
    now = state.clock.now()
    return [row.public(now) for row in rows]


async def api_tokens(request: Request) -> Response:
    if request.method != "POST":
        return JSON({"items": await _tokens(request)})
    body = await request.body()
    try:
        if len(body) > _MAX_BODY:
            raise TokenRequestInvalid("body too large")
        try:
            fields = json.loads(body or b"{}")
        except ValueError:
            raise TokenRequestInvalid("body must be a JSON object") from None
        if not isinstance(fields, dict):
            raise TokenRequestInvalid("body must be a JSON object")
        row, token = await _issue(request, fields)
    except TokenRequestInvalid as exc:
        return JSON({"error": str(exc), "reason": "bad_request"}, status_code=400)
    return JSON({**row.public(ReporterState.of(request).clock.now()), "token": token}, status_code=201)


async def api_revoke(request: Request) -> Response:
    outcome = await _revoke(request)
    if outcome == "unknown":
        return JSON({"error": "no such token", "reason": "not_found"}, status_code=404)
    return JSON({"token_id": request.path_params["token_id"], "outcome": outcome})


async def tokens_page(request: Request) -> Response:
    context: dict[str, Any] = {"roles": ROLES, "issued": None, "issued_token": None, "message": ""}
    status = 200
    if request.method == "POST":
        try:
            context["issued"], context["issued_token"] = await _issue(request, request.scope.get("access.form", {}))
        except TokenRequestInvalid as exc:
            context["message"], status = str(exc), 400
    return render(request, "tokens.html", "Tokens", {**context, "tokens": await _tokens(request)},
                  status_code=status)


async def portal_revoke(request: Request) -> Response:
    await _revoke(request)
    return RedirectResponse("/portal/tokens", status_code=303)
