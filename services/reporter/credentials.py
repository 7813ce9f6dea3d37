"""Turning a request's credentials into a ``Principal`` (or a ``Refusal``): reporting tokens, OIDC tokens,
portal sessions, and licences (refused unless they still carry the legacy ``reporting`` entitlement).

Fail closed: until the licence revocations and the reporting tokens have been loaded once, every credential
is refused with 503 (and /readyz says not ready).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from starlette.datastructures import Headers
from starlette.types import Scope

from services.reporter.authz import Principal, Refusal, cookies_of, is_portal
from services.reporter.state import DatabaseUnavailable, ReporterState
from shared.licence_auth import CredentialsRefused, parse_basic
from shared.licensing import REPORTING, LicenseProblem, LicenseRefused
from shared.reporting_tokens import AUDITOR, ReportingToken, find_token, token_id_of

log = logging.getLogger("reporter.access")

SESSION_COOKIE = "audit_session"
_BEARER = {"WWW-Authenticate": 'Bearer realm="audit-reporting"'}
_BEARER_INVALID = {"WWW-Authenticate": 'Bearer realm="audit-reporting", error="invalid_token"'}
_MAX_AUTHORIZATION = 20 * 1024
# How many legacy licences get their own warning (one each) before the warnings are only counted.
_MAX_WARNED_LICENCES = 10_000
# A session's last-seen time is written at most this often (idle timeouts are measured in minutes).
_TOUCH_EVERY = timedelta(seconds=30)

INGEST_CREDENTIAL_REFUSED = (
    "a licence is an ingest credential and cannot read the audit log: send a reporting token as "
    "'Authorization: Bearer <token>' (auditctl token issue --org ORG --role ROLE, or make token), "
    "or an OIDC token of your organisation"
)


def session_digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


@dataclass
class Authenticator:
    state: ReporterState

    def _ready(self) -> None:
        """Fail closed: nothing is accepted before the revocation lists are loaded."""
        if not (self.state.revocations_loaded and self.state.tokens.loaded):
            raise Refusal(503, "the reporter has not loaded its revocation lists yet; retry shortly", "not_ready",
                          headers={"Retry-After": "2"})

    async def __call__(self, scope: Scope) -> Principal:
        headers = Headers(scope=scope)
        authorization = headers.get("authorization")
        if authorization:
            if len(authorization) > _MAX_AUTHORIZATION:
                raise Refusal(401, "Authorization header is too long", "bad_credentials", headers=_BEARER)
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                self._ready()
                return await self._bearer(value.strip())
            if scheme.lower() == "basic":
                return self._licence(authorization)
            raise Refusal(401, "send 'Authorization: Bearer <reporting token>'", "bad_scheme", headers=_BEARER)
        cookie = cookies_of(headers).get(SESSION_COOKIE)
        if cookie and is_portal(scope["path"]):
            self._ready()
            return await self._session(cookie)
        raise Refusal(401, "missing credentials: send 'Authorization: Bearer <reporting token>'", "no_credentials",
                      headers=_BEARER)

    async def _bearer(self, value: str) -> Principal:
        token_id = token_id_of(value)
        if token_id is not None:
            token = await self.token(value)
            if token is None:
                raise Refusal(401, "unknown, expired or revoked reporting token", "invalid_token",
                              headers=_BEARER_INVALID)
            return principal_of_token(token)
        if self.state.oidc is not None:
            claims = await self.state.oidc.verify(value)
            return self.state.oidc.principal(claims)
        raise Refusal(401, "not a reporting token (rpt1....), and OIDC is not configured", "invalid_token",
                      headers=_BEARER_INVALID)

    async def token(self, value: str) -> ReportingToken | None:
        """The active token this value is, or None. A token issued since the last refresh is read once."""
        self._ready()
        token_id = token_id_of(value)
        if token_id is None:
            return None
        book = self.state.tokens
        token = book.get(token_id)
        if token is None:
            try:
                async with self.state.connection() as conn:
                    token = await find_token(conn, token_id)
            except (DatabaseUnavailable, asyncpg.PostgresError, OSError):
                raise Refusal(503, "the reporting database is unavailable; retry shortly", "unavailable",
                              headers={"Retry-After": "2"}) from None
            if token is None or not token.active(self.state.clock.now()):
                return None
            book.add(token)
        if not token.active(self.state.clock.now()) or not token.matches(value):
            return None
        return token

    def _licence(self, header: str) -> Principal:
        try:
            org, key = parse_basic(header)
            lic = self.state.verifier.verify(org, key, now=self.state.clock.now(), entitlement=REPORTING)
        except CredentialsRefused as exc:
            raise Refusal(401, str(exc), exc.reason, headers=_BEARER) from None
        except LicenseRefused as refused:
            if refused.problem is LicenseProblem.NOT_ENTITLED:
                raise Refusal(403, INGEST_CREDENTIAL_REFUSED, "ingest_credential",
                              extra={"wants": "reporting_token"}) from None
            status = 401 if refused.problem.is_authentication_failure else 403
            raise Refusal(status, str(refused), refused.problem.value,
                          headers=_BEARER if status == 401 else None) from None
        self._ready()  # a refusal above needs no list; an acceptance does
        warned = self.state.warned_licences
        if lic.license_id not in warned and len(warned) < _MAX_WARNED_LICENCES:
            warned.add(lic.license_id)
            log.warning(
                "a licence with the legacy reporting entitlement read the audit log; it is accepted read-only "
                "(auditor) until re-issued. Issue reporting tokens and re-issue the licence with otel_ingest only",
                extra={"license_id": lic.license_id, "org_id": lic.org_id},
            )
        return Principal(tenant_id=lic.tenant_id, org_id=lic.org_id, role=AUDITOR,
                         subject=f"licence:{lic.license_id}", credential="licence")

    async def _session(self, cookie: str) -> Principal:
        state = self.state
        now = state.clock.now()
        try:
            async with state.connection() as conn:
                row = await conn.fetchrow(
                    "SELECT tenant_id, org_id, role, user_email, subject, credential, token_id, csrf_token,"
                    " last_seen_at, expires_at, ended_at FROM portal_sessions WHERE session_sha256 = $1",
                    session_digest(cookie),
                )
                idle = timedelta(minutes=state.settings.reporter_session_idle_minutes)
                if row is None or row["ended_at"] is not None or now >= row["expires_at"] \
                        or now >= row["last_seen_at"] + idle:
                    raise Refusal(401, "signed out (the sign-in ended or expired)", "session_ended")
                if row["token_id"] is not None:
                    token = state.tokens.get(row["token_id"])
                    if token is None or not token.active(now):
                        raise Refusal(401, "the token this sign-in used was revoked or expired", "session_ended")
                if now - row["last_seen_at"] >= _TOUCH_EVERY:
                    await conn.execute("UPDATE portal_sessions SET last_seen_at = $2 WHERE session_sha256 = $1",
                                       session_digest(cookie), now)
        except (DatabaseUnavailable, asyncpg.PostgresError, OSError):
            raise Refusal(503, "the reporting database is unavailable; retry shortly", "unavailable",
                          headers={"Retry-After": "2"}) from None
        return Principal(tenant_id=row["tenant_id"], org_id=row["org_id"], role=row["role"],
                         subject=row["subject"], credential=row["credential"], user_email=row["user_email"],
                         token_id=row["token_id"], csrf_token=row["csrf_token"])


def principal_of_token(token: ReportingToken) -> Principal:
    return Principal(tenant_id=token.tenant_id, org_id=token.org_id, role=token.role,
                     subject=f"token:{token.token_id}", credential="token", user_email=token.user_email,
                     token_id=token.token_id)


async def start_session(conn: asyncpg.Connection, principal: Principal, now: datetime,
                        max_age: timedelta) -> tuple[str, str]:
    """A new portal sign-in: ``(cookie value, CSRF token)``; only the cookie's digest is stored."""
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO portal_sessions (session_sha256, tenant_id, org_id, role, user_email, subject, credential,"
        " token_id, csrf_token, created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
        " $10, $10, $11)",
        session_digest(cookie), principal.tenant_id, principal.org_id, principal.role, principal.user_email,
        principal.subject, principal.credential, principal.token_id, csrf, now, now + max_age,
    )
    return cookie, csrf


async def end_session(conn: asyncpg.Connection, cookie: str) -> None:
    await conn.execute("UPDATE portal_sessions SET ended_at = now() WHERE session_sha256 = $1 AND ended_at IS NULL",
                       session_digest(cookie))
