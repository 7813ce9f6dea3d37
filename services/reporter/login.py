"""The portal's sign-in and sign-out: a reporting token typed into a form, or the organisation's identity
provider (OIDC authorization code with PKCE) when one is configured.

A sign-in is a row in ``portal_sessions`` and a cookie holding its random id: ``HttpOnly``,
``SameSite=Strict``, ``Secure`` over TLS (or always, REPORTER_SECURE_COOKIES), ``Path=/portal``; it ends
after REPORTER_SESSION_IDLE_MINUTES without a request, REPORTER_SESSION_MAX_HOURS after it began, at
sign-out, or when its token is revoked. The sign-in form carries a double-submit CSRF token; the forms of a
signed-in page carry the session's (both checked in services/reporter/authz.py).
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from services.reporter.authz import LOGIN_CSRF_COOKIE, Principal, Refusal, cookies_of
from services.reporter.credentials import SESSION_COOKIE, Authenticator, end_session, principal_of_token, start_session
from services.reporter.oidc import IdentityProviderUnavailable, pkce_pair
from services.reporter.portal import render_error, templates
from services.reporter.state import ReporterState

log = logging.getLogger("reporter.access")

OIDC_COOKIE = "audit_oidc"
_OIDC_FLOW_SECONDS = 600
_DEFAULT_NEXT = "/portal/events"


def safe_next(value: str | None) -> str:
    """Only a page of this portal: never an open redirect."""
    if value and value.startswith("/portal/") and not value.startswith("//") and "\\" not in value \
            and not value.startswith(("/portal/login", "/portal/logout", "/portal/oidc")):
        return value
    return _DEFAULT_NEXT


def _secure(request: Request) -> bool:
    return ReporterState.of(request).settings.reporter_secure_cookies == "always" or request.url.scheme == "https"


def _set_cookie(request: Request, response: Response, name: str, value: str, *, max_age: int | None,
                path: str = "/portal", same_site: str = "strict") -> None:
    response.set_cookie(name, value, max_age=max_age, path=path, secure=_secure(request), httponly=True,
                        samesite=same_site)  # type: ignore[arg-type]


def _login_page(request: Request, message: str = "", status_code: int = 200) -> Response:
    state = ReporterState.of(request)
    csrf = secrets.token_urlsafe(24)
    response = templates.TemplateResponse(
        request, "login.html",
        {"csrf": csrf, "next": safe_next(request.query_params.get("next") or _form(request).get("next")),
         "oidc": state.oidc is not None, "message": message},
        status_code=status_code,
    )
    _set_cookie(request, response, LOGIN_CSRF_COOKIE, csrf, max_age=_OIDC_FLOW_SECONDS, path="/portal/login")
    return response


def _form(request: Request) -> dict[str, str]:
    form: dict[str, str] = request.scope.get("access.form", {})
    return form


async def login_page(request: Request) -> Response:
    return _login_page(request)


async def _signed_in(request: Request, principal: Principal, next_page: str) -> Response:
    state = ReporterState.of(request)
    settings = state.settings
    max_age = timedelta(hours=settings.reporter_session_max_hours)
    async with state.connection() as conn:
        cookie, _ = await start_session(conn, principal, state.clock.now(), max_age)
    log.info("portal sign-in", extra={"subject": principal.subject, "role": principal.role,
                                       "tenant_id": principal.tenant_id})
    # A page of our own that moves on, rather than a redirect: after the identity provider's cross-site
    # redirect, a SameSite=Strict cookie is only sent on a navigation that starts on this site.
    response = templates.TemplateResponse(request, "signed_in.html", {"next": safe_next(next_page)})
    _set_cookie(request, response, SESSION_COOKIE, cookie, max_age=int(max_age.total_seconds()))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/portal/login")
    return response


async def login_submit(request: Request) -> Response:
    form = _form(request)
    state = ReporterState.of(request)
    try:
        token = await Authenticator(state).token(form.get("token", "").strip())
    except Refusal as refusal:
        return _login_page(request, refusal.message, refusal.status)
    if token is None:
        return _login_page(request, "That is not an active reporting token.", 401)
    return await _signed_in(request, principal_of_token(token), form.get("next", ""))


async def logout(request: Request) -> Response:
    state = ReporterState.of(request)
    cookie = cookies_of(request.headers).get(SESSION_COOKIE)
    if cookie:
        async with state.connection() as conn:
            await end_session(conn, cookie)
    response = RedirectResponse("/portal/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/portal", secure=_secure(request), httponly=True,
                           samesite="strict")
    return response


def _redirect_uri(request: Request) -> str:
    base = ReporterState.of(request).settings.reporter_public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{base}/portal/oidc/callback"


async def oidc_start(request: Request) -> Response:
    state = ReporterState.of(request)
    if state.oidc is None:
        return render_error(request, 404, "No identity provider is configured; sign in with a token.")
    try:
        authorization_url, _ = await state.oidc.endpoints()
    except IdentityProviderUnavailable as exc:
        log.warning("identity provider unavailable", extra={"error": str(exc)})
        return render_error(request, 503, "The identity provider cannot be reached; retry shortly.")
    verifier, challenge = pkce_pair()
    flow_state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    query = urlencode({
        "response_type": "code", "client_id": state.settings.reporter_oidc_audience,
        "redirect_uri": _redirect_uri(request), "scope": "openid email profile", "state": flow_state,
        "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256",
    })
    separator = "&" if "?" in authorization_url else "?"
    response = RedirectResponse(f"{authorization_url}{separator}{query}", status_code=303)
    next_page = safe_next(request.query_params.get("next"))
    # Lax, not Strict: the identity provider's redirect back is a cross-site navigation that must carry it.
    _set_cookie(request, response, OIDC_COOKIE, ".".join((flow_state, nonce, verifier, next_page)),
                max_age=_OIDC_FLOW_SECONDS, path="/portal/oidc", same_site="lax")
    return response


async def oidc_callback(request: Request) -> Response:
    state = ReporterState.of(request)
    if state.oidc is None:
        return render_error(request, 404, "No identity provider is configured; sign in with a token.")
    flow: list[str] = cookies_of(request.headers).get(OIDC_COOKIE, "").split(".", 3)
    q = request.query_params
    if q.get("error"):
        return render_error(request, 401, f"The identity provider refused the sign-in: {q.get('error')}")
    if len(flow) != 4 or not q.get("code") or not secrets.compare_digest(flow[0], q.get("state", "")):
        return render_error(request, 403, "This sign-in did not start here or has expired; start it again.")
    flow_state, nonce, verifier, next_page = flow
    del flow_state
    try:
        id_token = await state.oidc.exchange_code(q["code"], verifier, _redirect_uri(request))
        principal = state.oidc.principal(await state.oidc.verify(id_token, nonce=nonce))
    except IdentityProviderUnavailable as exc:
        log.warning("identity provider unavailable", extra={"error": str(exc)})
        return render_error(request, 503, "The identity provider cannot be reached; retry shortly.")
    except Refusal as refusal:
        return render_error(request, refusal.status, refusal.message)
    response = await _signed_in(request, principal, next_page)
    response.delete_cookie(OIDC_COOKIE, path="/portal/oidc")
    return response

