"""The reporter in-process (its lifespan, pool and access-trail producer real, no background loops) against a
seeded database and the real broker."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest

from services.reporter.app import create_app
from services.reporter.settings import ReporterSettings
from shared.db.pool import connect
from shared.db.roles import ROLE_BY_COMPONENT, dsn_for_role
from shared.keys import Ed25519Signer
from shared.licensing import OTEL_INGEST, REPORTING, LicenseVerifier, issue_license
from shared.reporting_tokens import AUDITOR, issue_token
from tests.conftest import Infra, Topics
from tests.integration.reporter.scenario import ORG_A, ORG_B, TENANT_A, TENANT_B


@dataclass
class Reporter:
    client: httpx.AsyncClient
    app: Any
    issuer: Ed25519Signer
    database_url: str
    topics: Topics | None = None
    _tokens: dict[tuple[str, str, str, str | None], str] = field(default_factory=dict)

    def licence(self, org: str, tenant: str, entitlements: tuple[str, ...] = (OTEL_INGEST,),
                valid_for: timedelta = timedelta(days=1)) -> dict[str, str]:
        """HTTP Basic with a licence: an ingest credential (or, with REPORTING, a legacy one)."""
        _, token = issue_license(self.issuer, org_id=org, tenant_id=tenant, entitlements=entitlements,
                                 valid_for=valid_for)
        return {"Authorization": "Basic " + base64.b64encode(f"{org}:{token}".encode()).decode()}

    def legacy_licence(self, org: str, tenant: str) -> dict[str, str]:
        return self.licence(org, tenant, (OTEL_INGEST, REPORTING))

    async def token(self, org: str, tenant: str, role: str, email: str | None = None) -> str:
        key = (org, tenant, role, email)
        if key not in self._tokens:
            conn = await connect(self.database_url)
            try:
                _, self._tokens[key] = await issue_token(conn, tenant_id=tenant, org_id=org, role=role,
                                                         user_email=email, expires_at=None, created_by="test")
            finally:
                await conn.close()
        return self._tokens[key]

    async def bearer(self, org: str, tenant: str, role: str, email: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(org, tenant, role, email)}"}

    @property
    def tenant_a(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._tokens[(ORG_A, TENANT_A, AUDITOR, None)]}"}

    @property
    def tenant_b(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._tokens[(ORG_B, TENANT_B, AUDITOR, None)]}"}


async def started(database_url: str, topics: Topics | None = None, bootstrap: str | None = None,
                  **settings: Any) -> AsyncIterator[Reporter]:
    issuer = Ed25519Signer.generate()
    kafka: dict[str, Any] = {"kafka_bootstrap_servers": bootstrap, "topic_canonical": topics.canonical} if topics and bootstrap \
        else {}
    # As in production: the reporter's own role, which reads the record and writes only its rollups.
    reporter_dsn = dsn_for_role(database_url, ROLE_BY_COMPONENT["reporter"])
    config = ReporterSettings(database_url=reporter_dsn, revocation_refresh_seconds=0.2, **kafka, **settings)
    app = create_app(config, LicenseVerifier.from_public_keys([issuer.public_key]), background_work=False)
    async with app.router.lifespan_context(app):
        state = app.state.reporter
        for _ in range(400):
            if state.pool is not None and state.revocations_loaded and (state.trail.ready or not kafka):
                break
            await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://reporter") as client:
            reporter = Reporter(client, app, issuer, database_url, topics)
            await reporter.token(ORG_A, TENANT_A, AUDITOR)
            await reporter.token(ORG_B, TENANT_B, AUDITOR)
            yield reporter


@pytest.fixture
async def reporter(database_url: str, topics: Topics, infra: Infra) -> AsyncIterator[Reporter]:
    async for running in started(database_url, topics, infra.bootstrap):
        yield running
