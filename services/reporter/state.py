"""What the request handlers share: settings, the licence verifier, the pool (once connected), the clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
from starlette.requests import HTTPConnection

from services.receiver.auth import LicensedOrg
from services.reporter.settings import ReporterSettings
from shared.clock import Clock
from shared.licensing import License, LicenseVerifier
from shared.witness import Witness, witness_from_settings


class DatabaseUnavailable(Exception):
    """No connection yet (start-up) or the database went away: 503, the client may retry."""


@dataclass
class ReporterState:
    settings: ReporterSettings
    verifier: LicenseVerifier
    clock: Clock
    pool: asyncpg.Pool | None = None
    revocations_loaded: bool = False
    draining: bool = False
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


def licence_of(conn: HTTPConnection) -> License:
    user = conn.user
    assert isinstance(user, LicensedOrg), "route without the licence middleware"
    return user.license


def tenant_of(conn: HTTPConnection) -> str:
    """The only source of the tenant a request may read: the verified licence."""
    return licence_of(conn).tenant_id
