"""Who may read what: the one place the reporter decides it, for every API endpoint and portal page.

``RULES`` is the route -> permission table; ``ROLE_PERMISSIONS`` says which role holds which permission
(the table in the README, "Roles"). ``AccessControl`` is the ASGI part in front of every route. For each
request it

1. finds the path's rule (a path with none is refused with 404 before any handler runs: fail closed);
2. lets public paths through, and otherwise authenticates (``credentials.Authenticator``: a reporting token,
   an OIDC token, a portal session, or a legacy licence) - never before the revocation lists are loaded;
3. checks the rule's permission against the principal's role (403 otherwise);
4. checks the CSRF token of every state-changing portal form;
5. for a rule that discloses content or proofs, holds the answer back until its ``access`` event is
   acknowledged by the broker (``audit_trail``), and answers 503 instead when it is not: nothing is
   disclosed unaudited.

What a role sees *within* an endpoint it may call (an analyst's lengths instead of text, a developer's own
rows only, who sees access rows) is decided by ``Principal``'s properties, which the handlers apply.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.reporting_tokens import ADMIN, ANALYST, AUDITOR, DEVELOPER

log = logging.getLogger("reporter.access")


class Permission(Enum):
    PUBLIC = "public"                # no credentials (health, the OpenAPI document, the login page)
    SIGNED_IN = "signed_in"          # any role (who am I, logout)
    READ_EVENTS = "read_events"      # the decisions feed
    READ_SESSIONS = "read_sessions"  # the session list and summaries
    READ_USAGE = "read_usage"        # usage by user, model, day
    READ_COMPLETENESS = "read_completeness"  # completeness metadata of the chains
    READ_PROOFS = "read_proofs"      # per-record proofs
    READ_CHAIN = "read_chain"        # chain status
    READ_KEYS = "read_keys"          # signing keys
    MANAGE_TOKENS = "manage_tokens"  # issue, list, revoke reporting tokens


_EVERY_ROLE = {Permission.SIGNED_IN, Permission.READ_EVENTS, Permission.READ_SESSIONS}
ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    ADMIN: frozenset(Permission) - {Permission.PUBLIC},
    AUDITOR: frozenset(_EVERY_ROLE | {Permission.READ_USAGE, Permission.READ_COMPLETENESS, Permission.READ_PROOFS,
                                      Permission.READ_CHAIN, Permission.READ_KEYS}),
    ANALYST: frozenset(_EVERY_ROLE | {Permission.READ_USAGE, Permission.READ_COMPLETENESS}),
    DEVELOPER: frozenset(_EVERY_ROLE),
}


class Discloses(Enum):
    CONTENT = "content"  # prompts, responses, tool input, error text (for the roles that see content)
    PROOF = "proof"      # a record's proof (its canonical bytes carry the content too)


@dataclass(frozen=True)
class Principal:
    """Who is asking: always exactly one tenant, one role."""

    tenant_id: str
    org_id: str
    role: str
    subject: str            # token:<id>, oidc:<sub>, licence:<id>
    credential: str         # token, oidc, licence
    user_email: str | None = None
    token_id: str | None = None
    csrf_token: str | None = None  # set when the request came with a portal session

    @property
    def is_authenticated(self) -> bool:  # what Starlette's request.user is asked
        return True

    @property
    def display_name(self) -> str:
        return self.user_email or self.subject

    @property
    def sees_content(self) -> bool:
        """Analysts see lengths where the others see prompt, response, tool-input and error text."""
        return self.role != ANALYST

    @property
    def own_email(self) -> str | None:
        """A developer reads only rows whose user_email is their own; None means every row of the tenant."""
        return self.user_email if self.role == DEVELOPER else None

    @property
    def sees_access_rows(self) -> bool:
        """The trail of reads is for admins and auditors."""
        return self.role in (ADMIN, AUDITOR)

    def may(self, permission: Permission) -> bool:
        return permission is Permission.PUBLIC or permission in ROLE_PERMISSIONS.get(self.role, frozenset())


@dataclass(frozen=True)
class Rule:
    path: str
    permission: Permission
    methods: frozenset[str] = frozenset({"GET", "HEAD"})
    discloses: Discloses | None = None
    # "session": the portal session's CSRF token; "login": the sign-in form's double-submit cookie.
    csrf: str | None = None
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", compile_path(self.path)[0])


def _rule(path: str, permission: Permission, *methods: str, discloses: Discloses | None = None,
          csrf: str | None = None) -> Rule:
    return Rule(path, permission, frozenset(methods or ("GET", "HEAD")), discloses, csrf)


API = "/api/v1"
P = Permission
RULES: tuple[Rule, ...] = (
    # No credentials.
    _rule("/", P.PUBLIC),
    _rule("/healthz", P.PUBLIC),
    _rule("/readyz", P.PUBLIC),
    _rule("/openapi.json", P.PUBLIC),
    _rule("/static/portal.css", P.PUBLIC),
    _rule("/portal", P.PUBLIC),
    _rule("/portal/", P.PUBLIC),
    _rule("/portal/login", P.PUBLIC),
    _rule("/portal/login", P.PUBLIC, "POST", csrf="login"),
    _rule("/portal/oidc/start", P.PUBLIC),
    _rule("/portal/oidc/callback", P.PUBLIC),
    # The API.
    _rule(f"{API}/whoami", P.SIGNED_IN),
    _rule(f"{API}/audit/events", P.READ_EVENTS, discloses=Discloses.CONTENT),
    _rule(f"{API}/audit/records/{{record_id:int}}/proof", P.READ_PROOFS, discloses=Discloses.PROOF),
    # Merkle tree heads and consistency proofs: hashes and signatures only, no row's content. A consistency
    # proof is still a proof, so it is recorded like the others; signed tree heads are chain status.
    _rule(f"{API}/audit/consistency", P.READ_PROOFS, discloses=Discloses.PROOF),
    _rule(f"{API}/audit/tree-heads", P.READ_PROOFS),
    _rule(f"{API}/audit/verify", P.READ_CHAIN),
    _rule(f"{API}/sessions", P.READ_SESSIONS),
    _rule(f"{API}/sessions/{{session_id:path}}", P.READ_SESSIONS, discloses=Discloses.CONTENT),
    _rule(f"{API}/usage", P.READ_USAGE),
    _rule(f"{API}/completeness", P.READ_COMPLETENESS),
    _rule(f"{API}/signing-keys", P.READ_KEYS),
    _rule(f"{API}/tokens", P.MANAGE_TOKENS, "GET", "HEAD", "POST"),
    _rule(f"{API}/tokens/{{token_id}}/revoke", P.MANAGE_TOKENS, "POST"),
    # The portal.
    _rule("/portal/logout", P.SIGNED_IN, "POST", csrf="session"),
    _rule("/portal/events", P.READ_EVENTS, discloses=Discloses.CONTENT),
    _rule("/portal/sessions", P.READ_SESSIONS),
    _rule("/portal/sessions/{session_id:path}", P.READ_SESSIONS, discloses=Discloses.CONTENT),
    _rule("/portal/usage", P.READ_USAGE),
    _rule("/portal/completeness", P.READ_COMPLETENESS),
    _rule("/portal/chain", P.READ_CHAIN),
    _rule("/portal/records/{record_id:int}/proof", P.READ_PROOFS, discloses=Discloses.PROOF),
    _rule("/portal/tokens", P.MANAGE_TOKENS),
    _rule("/portal/tokens", P.MANAGE_TOKENS, "POST", csrf="session"),
    _rule("/portal/tokens/{token_id}/revoke", P.MANAGE_TOKENS, "POST", csrf="session"),
)


def find_rule(path: str, method: str) -> tuple[Rule | None, bool]:
    """``(rule, path_known)``: the rule for this path and method; path_known tells 405 from 404."""
    known = False
    for rule in RULES:
        if rule.regex.match(path):
            known = True
            if method in rule.methods:
                return rule, True
    return None, known


def unguarded_routes(routes: Any, prefix: str = "") -> list[str]:
    """Routes (with their methods) that no rule covers. The app refuses to start with any: a new endpoint
    must be given its permission in ``RULES`` (and a row in tests/integration/reporter/test_access_matrix.py)."""
    from starlette.routing import Mount, Route  # noqa: PLC0415 - only at start-up

    missing = []
    for route in routes:
        if isinstance(route, Mount):
            missing += unguarded_routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            sample = re.sub(r"\{[^}]*\}", "1", prefix + route.path)
            missing += [f"{method} {prefix}{route.path}" for method in sorted(route.methods or ())
                        if find_rule(sample, method)[0] is None]
    return missing


class Refusal(Exception):
    """An answer instead of the route: 401, 403, 503 and friends, with a reason a client can act on."""

    def __init__(self, status: int, message: str, reason: str, *, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.headers = headers or {}
        self.extra = extra or {}


def is_portal(path: str) -> bool:
    return path == "/portal" or path.startswith("/portal/")


Authenticate = Callable[[Scope], Awaitable[Principal]]
RecordAccess = Callable[[Scope, Principal, Rule, int], Awaitable[None]]
RenderError = Callable[[Scope, int, str], Response]
_MAX_FORM_BYTES = 64 * 1024
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_CSRF_COOKIE = "audit_login_csrf"
DISCLOSURE_KEY = "access.disclosure"


def form_of(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, first value of each field (bad bytes become U+FFFD)."""
    try:
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=100)
    except ValueError:  # more fields than any of our forms has
        raise Refusal(400, "form has too many fields", "bad_request") from None
    return {key: values[0] for key, values in parsed.items()}


def note_disclosure(scope: Scope, **details: Any) -> None:
    """A handler tells what it discloses (row ids, counts, session): it goes into the access event."""
    scope.setdefault(DISCLOSURE_KEY, {}).update(details)


class AccessControl:
    """The ASGI part that enforces ``RULES`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, authenticate: Authenticate, record_access: RecordAccess,
                 render_error: RenderError) -> None:
        self.app = app
        self.authenticate = authenticate
        self.record_access = record_access
        self.render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        rule, known = find_rule(path, method)
        try:
            if rule is None:
                raise Refusal(405 if known else 404, "method not allowed" if known else "not found",
                              "method_not_allowed" if known else "not_found")
            if method in _UNSAFE:
                receive = await self._check_origin_and_csrf(scope, receive, rule)
            if rule.permission is Permission.PUBLIC:
                await self.app(scope, receive, send)
                return
            principal = await self.authenticate(scope)
            if not principal.may(rule.permission):
                raise Refusal(403, f"the {principal.role} role may not use {path}", "forbidden_for_role",
                              extra={"role": principal.role, "needs": rule.permission.value})
            if rule.csrf == "session":
                self._check_session_csrf(scope, principal)
        except Refusal as refusal:
            await self._refuse(scope, refusal)(scope, receive, send)
            return
        scope["user"] = principal
        scope["auth"] = sorted(p.value for p in ROLE_PERMISSIONS[principal.role])
        scope[DISCLOSURE_KEY] = {}
        audited = rule.discloses is Discloses.PROOF or (rule.discloses is Discloses.CONTENT
                                                        and principal.sees_content)
        if not audited:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._audited_send(scope, receive, send, principal, rule))

    def _audited_send(self, scope: Scope, receive: Receive, send: Send, principal: Principal,
                      rule: Rule) -> Send:
        """Holds the response start back until the access event is acknowledged; on failure sends 503 and
        drops the body the handler produced."""
        refused = False

        async def audited(message: Message) -> None:
            nonlocal refused
            if refused:
                return
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                try:
                    await self.record_access(scope, principal, rule, message["status"])
                except Refusal as refusal:
                    refused = True
                    await self._refuse(scope, refusal)(scope, receive, send)
                    return
            await send(message)

        return audited

    async def _check_origin_and_csrf(self, scope: Scope, receive: Receive, rule: Rule) -> Receive:
        """State changes from another site are refused: a foreign Origin, or a form without its CSRF token.
        The body is read here (bounded) and handed on unchanged."""
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin and origin != "null":
            host = headers.get("host", "")
            if origin.split("://", 1)[-1] != host:
                raise Refusal(403, "cross-origin request refused", "cross_origin")
        if rule.csrf is None:
            return receive
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refusal(400, "client went away", "disconnected")
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > _MAX_FORM_BYTES:
                raise Refusal(413, "form too large", "too_large")
        form = form_of(body)
        scope["access.form"] = form
        if rule.csrf == "login":
            cookie = _cookies(headers).get(LOGIN_CSRF_COOKIE, "")
            if not cookie or not secrets.compare_digest(cookie, form.get("csrf", "")):
                raise Refusal(403, "the sign-in form expired; load it again", "csrf")
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    @staticmethod
    def _check_session_csrf(scope: Scope, principal: Principal) -> None:
        form: dict[str, str] = scope.get("access.form", {})
        if principal.csrf_token is None:
            return  # a bearer token or licence in the Authorization header: no cookie a foreign site could ride
        if not secrets.compare_digest(principal.csrf_token, form.get("csrf", "")):
            raise Refusal(403, "the form's CSRF token does not match this sign-in; reload the page", "csrf")

    def _refuse(self, scope: Scope, refusal: Refusal) -> Response:
        path = scope["path"]
        if is_portal(path):
            if refusal.status == 401 and scope["method"] in ("GET", "HEAD"):
                return RedirectResponse(f"/portal/login?next={quote(path, safe='/')}", status_code=303)
            response = self.render_error(scope, refusal.status, refusal.message)
        else:
            response = JSONResponse({"error": refusal.message, "reason": refusal.reason, **refusal.extra},
                                    status_code=refusal.status)
        response.headers.update(refusal.headers)
        return response


def _cookies(headers: Headers) -> dict[str, str]:
    from http.cookies import SimpleCookie  # noqa: PLC0415 - only the sign-in paths parse cookies here

    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:
        return {}
    return {key: morsel.value for key, morsel in jar.items()}


cookies_of = _cookies
