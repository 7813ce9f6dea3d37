"""The app's edges with no database reachable: credentials that are refused anyway are refused first; nothing
is accepted before the revocation lists are loaded (503, fail closed), never 500."""

from __future__ import annotations

import asyncio
import base64

import httpx

from services.reporter.app import create_app
from services.reporter.settings import ReporterSettings
from shared.keys import Ed25519Signer
from shared.licensing import OTEL_INGEST, REPORTING, LicenseVerifier, issue_license


async def _unreachable(settings: ReporterSettings) -> object:
    raise OSError("connection refused")


async def test_refusals_and_503_before_the_database_is_there() -> None:
    issuer = Ed25519Signer.generate()
    app = create_app(ReporterSettings(), LicenseVerifier.from_public_keys([issuer.public_key]),
                     pool_factory=_unreachable, background_work=False)
    _, token = issue_license(issuer, org_id="acme", entitlements=(OTEL_INGEST, REPORTING))  # a legacy licence
    _, ingest_only = issue_license(issuer, org_id="acme")

    def basic(secret: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"acme:{secret}".encode()).decode()}

    async with app.router.lifespan_context(app):
        await asyncio.sleep(0.05)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["database"] is False
            assert (await client.get("/api/v1/audit/events")).status_code == 401
            assert (await client.get("/api/v1/audit/events", headers=basic("nonsense"))).status_code == 401
            assert (await client.get("/api/v1/audit/events", headers=basic(ingest_only))).status_code == 403
            unavailable = await client.get("/api/v1/audit/events", headers=basic(token))
            assert unavailable.status_code == 503 and unavailable.headers["retry-after"]
            assert unavailable.json()["reason"] == "not_ready"
            bearer = {"Authorization": "Bearer rpt1.0123456789abcdef." + "A" * 43}
            assert (await client.get("/api/v1/audit/events", headers=bearer)).status_code == 503
            page = await client.get("/portal/events", headers=basic(token))
            assert page.status_code == 503 and "text/html" in page.headers["content-type"]
            assert page.headers["content-security-policy"].startswith("default-src 'none'")
            assert page.headers["cache-control"] == "no-store"
            assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.1")
            assert (await client.get("/static/portal.css")).headers["content-type"].startswith("text/css")
