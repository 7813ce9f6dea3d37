"""The portal's own sign-in: a token form with CSRF, a session cookie (HttpOnly, SameSite=Strict, Secure over
TLS), idle and absolute timeouts, sign-out, revocation; and the reporter refusing everything before its
revocation lists are loaded (fail closed)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from services.reporter.app import create_app
from services.reporter.settings import ReporterSettings
from shared.keys import Ed25519Signer
from shared.licensing import LicenseVerifier
from shared.reporting_tokens import ADMIN, ANALYST, AUDITOR, revoke_token, token_id_of
from tests.conftest import Infra, Topics
from tests.integration.reporter.conftest import Reporter, started
from tests.integration.reporter.scenario import ORG_A, TENANT_A, seed

CSP = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str, next_page: str = "/portal/events") -> httpx.Response:
    form = await client.get(f"/portal/login?next={next_page}")
    assert form.status_code == 200
    return await client.post("/portal/login", data={"csrf": _csrf(form.text), "token": token, "next": next_page})


@pytest.fixture
async def tls_reporter(database_url: str, topics: Topics, infra: Infra) -> AsyncIterator[Reporter]:
    async for running in started(database_url, topics, infra.bootstrap):
        running.client.base_url = httpx.URL("https://reporter")
        yield running


async def test_sign_in_with_a_token_gives_a_strict_session_cookie(reporter: Reporter, db: asyncpg.Connection) -> None:
    await seed(db)
    client = reporter.client
    login = await client.get("/portal/login")
    assert login.headers["content-security-policy"].startswith(CSP)
    assert 'type="password"' in login.text
    signed_in = await sign_in(client, await reporter.token(ORG_A, TENANT_A, AUDITOR), "/portal/chain")
    assert signed_in.status_code == 200 and 'content="0;url=/portal/chain"' in signed_in.text
    cookie = next(c for c in signed_in.headers.get_list("set-cookie") if c.startswith("audit_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/portal" in cookie
    assert "Secure" not in cookie  # plain HTTP
    page = await client.get("/portal/events")
    assert page.status_code == 200 and "auditor · token:" in page.text and 'action="/portal/logout"' in page.text
    assert page.headers["content-security-policy"].startswith(CSP)
    # The cookie is the portal's: the API takes bearer credentials only.
    assert (await client.get("/api/v1/audit/events")).status_code == 401
    # Only the digest is stored.
    stored = await db.fetchval("SELECT count(*) FROM portal_sessions WHERE ended_at IS NULL")
    assert stored == 1
    assert client.cookies["audit_session"].encode() not in b"".join(
        bytes(r["session_sha256"]) for r in await db.fetch("SELECT session_sha256 FROM portal_sessions"))


async def test_the_session_cookie_is_secure_over_tls(tls_reporter: Reporter) -> None:
    signed_in = await sign_in(tls_reporter.client, await tls_reporter.token(ORG_A, TENANT_A, ANALYST))
    cookie = next(c for c in signed_in.headers.get_list("set-cookie") if c.startswith("audit_session="))
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


async def test_what_cannot_sign_in(reporter: Reporter) -> None:
    client = reporter.client
    form = await client.get("/portal/login")
    csrf = _csrf(form.text)
    licence = reporter.licence(ORG_A, TENANT_A)["Authorization"]
    for token in ("not-a-token", "rpt1.0123456789abcdef." + "A" * 43, licence):
        refused = await client.post("/portal/login", data={"csrf": csrf, "token": token})
        assert refused.status_code == 401 and "not an active reporting token" in refused.text
        assert "audit_session" not in refused.headers.get("set-cookie", "")
        csrf = _csrf(refused.text)  # each form gets a fresh one
    # The sign-in form's CSRF token: missing, wrong, or from another origin.
    token = await reporter.token(ORG_A, TENANT_A, AUDITOR)
    assert (await client.post("/portal/login", data={"token": token})).status_code == 403
    assert (await client.post("/portal/login", data={"csrf": "guess", "token": token})).status_code == 403
    foreign = await client.post("/portal/login", data={"csrf": csrf, "token": token},
                                headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    # Never an open redirect.
    away = await sign_in(client, token, "//evil.example/")
    assert 'content="0;url=/portal/events"' in away.text


async def test_forms_of_a_signed_in_page_need_its_csrf_token(reporter: Reporter, db: asyncpg.Connection) -> None:
    client = reporter.client
    await sign_in(client, await reporter.token(ORG_A, TENANT_A, ADMIN))
    tokens_page = await client.get("/portal/tokens")
    csrf = _csrf(tokens_page.text)
    assert (await client.post("/portal/tokens", data={"role": "auditor"})).status_code == 403
    assert (await client.post("/portal/tokens", data={"role": "auditor", "csrf": "x" * 43})).status_code == 403
    assert (await client.post("/portal/logout", data={})).status_code == 403
    issued = await client.post("/portal/tokens", data={"role": "analyst", "csrf": csrf, "description": "finance"})
    assert issued.status_code == 200
    new_token = re.search(r'id="new-token">([^<]+)<', issued.text)
    assert new_token and token_id_of(new_token.group(1))
    # It is shown once: the list shows ids, never tokens.
    listing = (await client.get("/portal/tokens")).text
    assert new_token.group(1) not in listing and str(token_id_of(new_token.group(1))) in listing
    bad = await client.post("/portal/tokens", data={"role": "developer", "csrf": csrf})
    assert bad.status_code == 400 and "needs" in bad.text
    revoked = await client.post(f"/portal/tokens/{token_id_of(new_token.group(1))}/revoke", data={"csrf": csrf})
    assert revoked.status_code == 303
    assert (await client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {new_token.group(1)}"})) \
        .status_code == 401


async def test_sign_out_and_timeouts_end_the_session(reporter: Reporter, db: asyncpg.Connection) -> None:
    client = reporter.client
    await sign_in(client, await reporter.token(ORG_A, TENANT_A, AUDITOR))
    page = await client.get("/portal/events")
    out = await client.post("/portal/logout", data={"csrf": _csrf(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/portal/login"
    assert 'audit_session=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    assert await db.fetchval("SELECT count(*) FROM portal_sessions WHERE ended_at IS NOT NULL") == 1
    # Even a copy of the old cookie no longer works.
    session = await db.fetchval("SELECT count(*) FROM portal_sessions")
    assert session == 1

    for expire in ("UPDATE portal_sessions SET last_seen_at = now() - interval '31 minutes'",  # idle
                   "UPDATE portal_sessions SET expires_at = now() - interval '1 second'"):  # absolute
        client.cookies.clear()
        await sign_in(client, await reporter.token(ORG_A, TENANT_A, AUDITOR))
        assert (await client.get("/portal/events")).status_code == 200
        await db.execute(expire + " WHERE ended_at IS NULL")
        ended = await client.get("/portal/events")
        assert ended.status_code == 303 and ended.headers["location"].startswith("/portal/login")


async def test_a_revoked_token_is_refused_within_the_refresh_interval(reporter: Reporter,
                                                                      db: asyncpg.Connection) -> None:
    client = reporter.client
    token = await reporter.token(ORG_A, TENANT_A, ANALYST)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/v1/whoami", headers=headers)).status_code == 200
    await sign_in(client, token)
    assert (await client.get("/portal/usage")).status_code == 200
    token_id = token_id_of(token)
    assert token_id is not None
    assert await revoke_token(db, token_id, revoked_by="test") == "revoked"  # as `auditctl token revoke` does
    await asyncio.sleep(0.6)  # REVOCATION_REFRESH_SECONDS is 0.2 here
    refused = await client.get("/api/v1/whoami", headers=headers)
    assert refused.status_code == 401 and refused.json()["reason"] == "invalid_token"
    assert (await client.get("/portal/usage")).status_code == 303


async def test_nothing_is_accepted_before_the_revocation_lists_are_loaded(database_url: str) -> None:
    gate = asyncio.Event()

    async def slow_pool(settings: ReporterSettings) -> asyncpg.Pool:
        await gate.wait()
        raise OSError("database not reachable yet")

    issuer = Ed25519Signer.generate()
    app = create_app(ReporterSettings(database_url=database_url), LicenseVerifier.from_public_keys(
        [issuer.public_key]), pool_factory=slow_pool, background_work=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reporter") as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["revocations"] is False
            token = {"Authorization": "Bearer rpt1.0123456789abcdef." + "A" * 43}
            refused = await client.get("/api/v1/audit/events", headers=token)
            assert refused.status_code == 503 and refused.json()["reason"] == "not_ready"
        gate.set()
