"""What the request handlers share: settings, the credential checkers, the pool (once connected), the access
trail, the clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
from starlette.requests import HTTPConnection

from services.reporter.authz import Principal
from services.reporter.settings import ReporterSettings
from shared.clock import Clock
from shared.licensing import LicenseVerifier
from shared.reporting_tokens import TokenBook
from shared.witness import Witness, witness_from_settings

if TYPE_CHECKING:
    from services.reporter.audit_trail import AccessTrail
    from services.reporter.oidc import OidcVerifier


class DatabaseUnavailable(Exception):
    """No connection yet (start-up) or the database went away: 503, the client may retry."""


@dataclass
class ReporterState:
    settings: ReporterSettings
    verifier: LicenseVerifier
    clock: Clock
    trail: AccessTrail
    oidc: OidcVerifier | None = None
    tokens: TokenBook = field(default_factory=TokenBook)
    pool: asyncpg.Pool | None = None
    revocations_loaded: bool = False
    draining: bool = False
    warned_licences: set[str] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # The witness the settings name, made once; only its location names are used (the reporter never writes).
    witness: Witness | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.witness = witness_from_settings(self.settings)

    @staticmethod
    def of(conn: HTTPConnection) -> ReporterState:
        state: ReporterState = conn.app.state.reporter
        return state

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self.pool is None:
            raise DatabaseUnavailable("the reporting database is not connected yet")
        async with self.pool.acquire(timeout=self.settings.reporter_statement_timeout_ms / 1000) as conn:
            yield conn


def principal_of(conn: HTTPConnection) -> Principal:
    """Who is asking, as services/reporter/authz.py admitted them; a route without a rule never gets here."""
    user = conn.scope.get("user")
    assert isinstance(user, Principal), "route without an access rule"
    return user


def tenant_of(conn: HTTPConnection) -> str:
    """The only source of the tenant a request may read: the verified credential."""
    return principal_of(conn).tenant_id
