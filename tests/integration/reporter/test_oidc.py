"""OIDC against a local issuer this test starts (keys generated here, JWKS on loopback): bearer tokens, the
role claim mapping, and the portal's authorization-code flow with PKCE."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from tests.conftest import Infra, Topics
from tests.integration.reporter.conftest import Reporter, started
from tests.integration.reporter.scenario import ALICE, ORG_A, SESSION_1, SESSION_2, TENANT_A, seed
from tests.oidc_issuer import LocalIssuer, new_key

API = "/api/v1"


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    running = LocalIssuer().start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def reporter(database_url: str, topics: Topics, infra: Infra, issuer: LocalIssuer) -> AsyncIterator[Reporter]:
    async for running in started(database_url, topics, infra.bootstrap, **issuer.settings(ORG_A, TENANT_A)):
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_bearer_tokens_of_the_issuer_map_to_roles(reporter: Reporter, issuer: LocalIssuer,
                                                        db: asyncpg.Connection) -> None:
    await seed(db)
    client = reporter.client
    auditor = bearer(issuer.token(groups=["staff", "audit-readers"], sub="aud-1"))
    who = (await client.get(f"{API}/whoami", headers=auditor)).json()
    assert (who["role"], who["tenant_id"], who["subject"], who["credential"]) == ("auditor", TENANT_A,
                                                                                   "oidc:aud-1", "oidc")
    assert (await client.get(f"{API}/signing-keys", headers=auditor)).status_code == 200
    analyst = bearer(issuer.token(groups="finance"))
    assert (await client.get(f"{API}/usage", headers=analyst)).status_code == 200
    assert (await client.get(f"{API}/signing-keys", headers=analyst)).status_code == 403
    feed = (await client.get(f"{API}/audit/events", headers=analyst)).json()["items"]
    assert feed and all(item["content"] is None for item in feed)
    # The most privileged mapped group wins.
    admin = bearer(issuer.token(groups=["engineering", "audit-admins"], email=ALICE))
    assert (await client.get(f"{API}/tokens", headers=admin)).status_code == 200
    developer = bearer(issuer.token(groups=["engineering"], email=ALICE, email_verified=True))
    rows = (await client.get(f"{API}/audit/events?limit=500", headers=developer)).json()["items"]
    assert len(rows) == 8 and {r["user"]["email"] for r in rows} == {ALICE}
    assert (await client.get(f"{API}/sessions/{SESSION_2}", headers=developer)).status_code == 404
    assert (await client.get(f"{API}/sessions/{SESSION_1}", headers=developer)).status_code == 200


async def test_tokens_the_issuer_did_not_vouch_for_are_refused(reporter: Reporter, issuer: LocalIssuer) -> None:
    client = reporter.client
    cases = {
        "other audience": issuer.token(groups="audit-readers", aud="someone-else"),
        "other issuer": issuer.token(groups="audit-readers", iss="https://evil.example"),
        "expired": issuer.token(groups="audit-readers", exp=1_700_000_000, iat=1_699_999_000),
        "foreign key": issuer.token(key=new_key("key-1"), groups="audit-readers"),
        "no subject": issuer.token(groups="audit-readers", sub=None),
        "garbage": "a.b.c",
    }
    for name, token in cases.items():
        response = await client.get(f"{API}/audit/events", headers=bearer(token))
        assert response.status_code == 401, (name, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer"), name
    no_role = await client.get(f"{API}/audit/events", headers=bearer(issuer.token(groups=["staff"])))
    assert no_role.status_code == 403 and no_role.json()["reason"] == "no_role"
    unverified = issuer.token(groups="engineering", email=ALICE, email_verified=False)
    assert (await client.get(f"{API}/audit/events", headers=bearer(unverified))).status_code == 403


async def test_a_rotated_key_is_fetched_when_a_token_names_it(reporter: Reporter, issuer: LocalIssuer) -> None:
    first = bearer(issuer.token(groups="audit-readers"))
    assert (await reporter.client.get(f"{API}/whoami", headers=first)).status_code == 200
    rotated = new_key("key-2")
    issuer.keys.append(rotated)
    oidc = reporter.app.state.reporter.oidc
    oidc._fetched_at -= 60  # the last fetch was over the minimum refresh interval ago
    second = bearer(issuer.token(key=rotated, groups="audit-readers"))
    assert (await reporter.client.get(f"{API}/whoami", headers=second)).status_code == 200


async def test_portal_sign_in_by_authorization_code_with_pkce(reporter: Reporter, issuer: LocalIssuer,
                                                              db: asyncpg.Connection) -> None:
    await seed(db)
    client = reporter.client
    issuer.user = {"sub": "alice-sub", "email": ALICE, "groups": ["engineering"]}
    login = await client.get("/portal/login")
    assert 'id="oidc-sign-in"' in login.text
    start = await client.get("/portal/oidc/start?next=/portal/sessions")
    assert start.status_code == 303
    location = urlsplit(start.headers["location"])
    assert f"{location.scheme}://{location.netloc}" == issuer.url and location.path == "/authorize"
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"] == "http://reporter/portal/oidc/callback" and query["client_id"] == "audit-portal"
    flow_cookie = start.headers["set-cookie"]
    assert "HttpOnly" in flow_cookie and "SameSite=lax" in flow_cookie and "Path=/portal/oidc" in flow_cookie

    # The browser at the identity provider, which sends it back with a code.
    async with httpx.AsyncClient() as browser:
        back = await browser.get(start.headers["location"])
    assert back.status_code == 302
    callback = urlsplit(back.headers["location"])
    # A callback whose state was not issued here is refused.
    forged = await client.get("/portal/oidc/callback?code=x&state=forged")
    assert forged.status_code == 403
    signed_in = await client.get(f"{callback.path}?{callback.query}")
    assert signed_in.status_code == 200, signed_in.text
    assert 'content="0;url=/portal/sessions"' in signed_in.text
    assert issuer.token_requests[-1]["code_verifier"]  # the verifier went to the token endpoint
    session_cookie = next(c for c in signed_in.headers.get_list("set-cookie") if c.startswith("audit_session="))
    assert "HttpOnly" in session_cookie and "SameSite=strict" in session_cookie and "Path=/portal" in session_cookie
    assert "Secure" not in session_cookie  # plain HTTP here; see the portal tests for TLS
    page = await client.get("/portal/sessions")
    assert page.status_code == 200 and "developer · alice@acme.example" in page.text
    assert SESSION_1 in page.text and SESSION_2 not in page.text
    # The code was single use.
    again = await client.get(f"{callback.path}?{callback.query}")
    assert again.status_code in (403, 503)
