"""The reporter in-process (its lifespan and pool real, no background loops) against a seeded database."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from services.reporter.app import create_app
from services.reporter.settings import ReporterSettings
from shared.db.roles import ROLE_BY_COMPONENT, dsn_for_role
from shared.keys import Ed25519Signer
from shared.licensing import DEFAULT_ENTITLEMENTS, LicenseVerifier, issue_license
from tests.integration.reporter.scenario import ORG_A, ORG_B, TENANT_A, TENANT_B


@dataclass
class Reporter:
    client: httpx.AsyncClient
    app: Any
    issuer: Ed25519Signer

    def credentials(self, org: str, tenant: str, entitlements: tuple[str, ...] = DEFAULT_ENTITLEMENTS,
                    valid_for: timedelta = timedelta(days=1)) -> dict[str, str]:
        _, token = issue_license(self.issuer, org_id=org, tenant_id=tenant, entitlements=entitlements,
                                 valid_for=valid_for)
        return {"Authorization": "Basic " + base64.b64encode(f"{org}:{token}".encode()).decode()}

    @property
    def tenant_a(self) -> dict[str, str]:
        return self.credentials(ORG_A, TENANT_A)

    @property
    def tenant_b(self) -> dict[str, str]:
        return self.credentials(ORG_B, TENANT_B)


async def started(database_url: str, **settings: Any) -> AsyncIterator[Reporter]:
    issuer = Ed25519Signer.generate()
    # As in production: the reporter's own role, which reads the record and writes only its rollups.
    reporter_dsn = dsn_for_role(database_url, ROLE_BY_COMPONENT["reporter"])
    config = ReporterSettings(database_url=reporter_dsn, revocation_refresh_seconds=0.2, **settings)
    app = create_app(config, LicenseVerifier.from_public_keys([issuer.public_key]), background_work=False)
    async with app.router.lifespan_context(app):
        state = app.state.reporter
        for _ in range(200):
            if state.pool is not None and state.revocations_loaded:
                break
            await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reporter") as client:
            yield Reporter(client, app, issuer)


@pytest.fixture
async def reporter(database_url: str) -> AsyncIterator[Reporter]:
    async for running in started(database_url):
        yield running

