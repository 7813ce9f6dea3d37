# ruff: noqa: S608 - SQL is assembled only from this module's constants; every value is a bind parameter.
"""Reporting tokens: the bearer credentials that read the audit log, apart from the licences that ingest.

A token is ``rpt1.<token id>.<secret>``: the id (public, 16 hex digits) names its row in
``reporting_tokens`` (0700_reporting_access.sql), the secret is 256 random bits. Only the SHA-256 of the
whole token is stored, so the database never holds a usable token, and the token is shown once.

Each token is bound to one tenant and one role (``ROLES``); a developer token also to one e-mail. Both the
``auditctl token`` commands and the reporter (its admin token endpoints, and verifying every request) use
this module.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

TOKEN_PREFIX = "rpt1"  # noqa: S105 - a format tag, not a secret
ADMIN, AUDITOR, ANALYST, DEVELOPER = "admin", "auditor", "analyst", "developer"
ROLES = (ADMIN, AUDITOR, ANALYST, DEVELOPER)
_TOKEN = re.compile(r"rpt1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")
_EMAIL = re.compile(r"[^@\s]{1,128}@[^@\s]{1,255}")
_COLUMNS = ("token_id, tenant_id, org_id, role, user_email, secret_sha256, description, created_at, created_by,"
            " expires_at, revoked_at, revoked_by")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def token_id_of(token: str) -> str | None:
    """The id a well-formed token names, or None (anything else is not a reporting token)."""
    match = _TOKEN.fullmatch(token)
    return match.group(1) if match else None


def valid_email(value: str) -> bool:
    return _EMAIL.fullmatch(value) is not None


@dataclass(frozen=True)
class ReportingToken:
    token_id: str
    tenant_id: str
    org_id: str
    role: str
    user_email: str | None
    secret_sha256: bytes
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    description: str = ""

    @classmethod
    def of(cls, row: asyncpg.Record | dict[str, Any]) -> ReportingToken:
        return cls(**{**dict(row), "secret_sha256": bytes(row["secret_sha256"])})

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(token_digest(token), self.secret_sha256)

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "active" if self.active(now) else "expired"

    def public(self, now: datetime) -> dict[str, Any]:
        """What may be listed: never the digest."""
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "token_id": self.token_id, "tenant_id": self.tenant_id, "org_id": self.org_id, "role": self.role,
            "user_email": self.user_email, "description": self.description, "created_at": iso(self.created_at),
            "created_by": self.created_by, "expires_at": iso(self.expires_at), "revoked_at": iso(self.revoked_at),
            "revoked_by": self.revoked_by, "status": self.status(now),
        }


def check_grant(role: str, user_email: str | None) -> None:
    """ValueError for a role or e-mail a token could not be issued with."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if user_email is not None and not valid_email(user_email):
        raise ValueError(f"{user_email!r} is not an e-mail address")
    if role == DEVELOPER and user_email is None:
        raise ValueError("a developer token reads only its own rows, so it needs --user EMAIL")


async def issue_token(conn: asyncpg.Connection, *, tenant_id: str, org_id: str, role: str,
                      user_email: str | None, expires_at: datetime | None, created_by: str,
                      description: str = "") -> tuple[ReportingToken, str]:
    """Store a new token's digest; returns the row and the token, which exists nowhere else from now on."""
    check_grant(role, user_email)
    token_id = secrets.token_hex(8)
    token = f"{TOKEN_PREFIX}.{token_id}.{secrets.token_urlsafe(32)}"
    row = await conn.fetchrow(
        f"INSERT INTO reporting_tokens (token_id, tenant_id, org_id, role, user_email, secret_sha256, description,"
        f" created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_COLUMNS}",
        token_id, tenant_id, org_id, role, user_email, token_digest(token), description, created_by, expires_at,
    )
    assert row is not None
    return ReportingToken.of(row), token


async def list_tokens(conn: asyncpg.Connection, *, tenant_id: str | None = None,
                      token_id: str | None = None) -> list[ReportingToken]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM reporting_tokens WHERE ($1::text IS NULL OR tenant_id = $1)"
        f" AND ($2::text IS NULL OR token_id = $2) ORDER BY created_at, token_id",
        tenant_id, token_id,
    )
    return [ReportingToken.of(row) for row in rows]


async def active_tokens(conn: asyncpg.Connection) -> list[ReportingToken]:
    """Every token that may still be used: what the reporter holds in memory between refreshes."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM reporting_tokens"
        f" WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
    )
    return [ReportingToken.of(row) for row in rows]


async def find_token(conn: asyncpg.Connection, token_id: str) -> ReportingToken | None:
    found = await list_tokens(conn, token_id=token_id)
    return found[0] if found else None


async def revoke_token(conn: asyncpg.Connection, token_id: str, *, revoked_by: str,
                       tenant_id: str | None = None) -> str:
    """'revoked', 'already revoked' or 'unknown' (also for another tenant's token, when a tenant is given).
    The portal sessions signed in with it end at once."""
    async with conn.transaction():
        result: str = await conn.execute(
            "UPDATE reporting_tokens SET revoked_at = now(), revoked_by = $2 WHERE token_id = $1"
            " AND revoked_at IS NULL AND ($3::text IS NULL OR tenant_id = $3)",
            token_id, revoked_by, tenant_id,
        )
        if not result.endswith(" 0"):
            await conn.execute(
                "UPDATE portal_sessions SET ended_at = now() WHERE token_id = $1 AND ended_at IS NULL", token_id
            )
            return "revoked"
        exists = await conn.fetchval(
            "SELECT count(*) FROM reporting_tokens WHERE token_id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
            token_id, tenant_id,
        )
    return "already revoked" if exists else "unknown"


class TokenBook:
    """The active tokens in memory, replaced on every refresh (so a revocation bites within one refresh
    interval); a token issued since the last refresh is looked up once, by id."""

    def __init__(self) -> None:
        self._tokens: dict[str, ReportingToken] = {}
        self.loaded = False

    def replace(self, tokens: Iterable[ReportingToken]) -> None:
        self._tokens = {t.token_id: t for t in tokens}
        self.loaded = True

    def get(self, token_id: str) -> ReportingToken | None:
        return self._tokens.get(token_id)

    def add(self, token: ReportingToken) -> None:
        self._tokens[token.token_id] = token

    def discard(self, token_id: str) -> None:
        self._tokens.pop(token_id, None)
