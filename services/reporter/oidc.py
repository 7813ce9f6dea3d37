"""OIDC: the organisation's identity provider vouches for its users, with joserfc doing the JOSE work.

Two ways in, both checked by ``OidcVerifier.verify`` (signature by a key of the issuer's JWKS, ``iss``,
``aud``, ``exp``, ``nbf``/``iat`` with a minute of leeway, ``sub``):

- an ID or access token (a JWT) sent as ``Authorization: Bearer``;
- the portal's authorization-code flow with PKCE (S256): ``/portal/oidc/start`` sends the browser to the
  issuer with a fresh state, nonce and code challenge; ``/portal/oidc/callback`` exchanges the code (with
  the verifier) at the token endpoint and checks the ID token, its nonce included.

The role comes from one claim (REPORTER_OIDC_ROLE_CLAIM) through REPORTER_OIDC_ROLE_MAP; the tenant from
the settings (one issuer serves one org). The JWKS is cached and re-read at most every 30 s when a token
names a key it does not hold (key rotation).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from services.reporter.authz import Principal, Refusal
from services.reporter.settings import ReporterSettings
from shared.clock import Clock
from shared.reporting_tokens import DEVELOPER, ROLES

log = logging.getLogger("reporter.oidc")

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_MAX_TOKEN_CHARS = 16 * 1024
_MAX_DOCUMENT_BYTES = 1024 * 1024
_HTTP_TIMEOUT_SECONDS = 5.0
_JWKS_MAX_AGE_SECONDS = 300.0
_JWKS_MIN_REFRESH_SECONDS = 30.0
_LEEWAY_SECONDS = 60
_BEARER_INVALID = {"WWW-Authenticate": 'Bearer realm="audit-reporting", error="invalid_token"'}


class IdentityProviderUnavailable(Exception):
    """The issuer's keys or endpoints could not be read: 503, never a guess."""


def _http(url: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise IdentityProviderUnavailable(f"not an http(s) URL: {url}")
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310
            raw = response.read(_MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise IdentityProviderUnavailable(f"{url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise IdentityProviderUnavailable(f"{url}: {exc}") from None
    if len(raw) > _MAX_DOCUMENT_BYTES:
        raise IdentityProviderUnavailable(f"{url}: document too large")
    try:
        document = json.loads(raw)
    except ValueError:
        raise IdentityProviderUnavailable(f"{url}: not JSON") from None
    if not isinstance(document, dict):
        raise IdentityProviderUnavailable(f"{url}: not a JSON object")
    return document


async def fetch_json(url: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    return await asyncio.to_thread(_http, url, data)


def pkce_pair() -> tuple[str, str]:
    """``(verifier, S256 challenge)`` (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class OidcVerifier:
    def __init__(self, settings: ReporterSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._endpoints: tuple[str, str] | None = None
        self._lock = asyncio.Lock()

    async def _key_set(self, *, refresh: bool) -> KeySet:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            stale = self._keys is None or age > _JWKS_MAX_AGE_SECONDS
            if stale or (refresh and age > _JWKS_MIN_REFRESH_SECONDS):
                document = await fetch_json(self.settings.reporter_oidc_jwks_url)
                try:
                    self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
                except (JoseError, ValueError, TypeError, KeyError) as exc:
                    raise IdentityProviderUnavailable(f"the issuer's JWKS is not usable: {exc}") from None
                self._fetched_at = time.monotonic()
            assert self._keys is not None
            return self._keys

    async def verify(self, token: str, *, nonce: str | None = None) -> dict[str, Any]:
        """The token's claims once everything checks; Refusal(401) otherwise, 503 if the keys are unreachable."""
        if len(token) > _MAX_TOKEN_CHARS or token.count(".") != 2:
            raise Refusal(401, "not a JWT", "invalid_token", headers=_BEARER_INVALID)
        try:
            decoded = await self._decode(token, refresh=False)
        except IdentityProviderUnavailable as exc:
            log.warning("identity provider unavailable", extra={"error": str(exc)})
            raise Refusal(503, "the identity provider's keys cannot be read; retry shortly", "idp_unavailable",
                          headers={"Retry-After": "5"}) from None
        claims = dict(decoded.claims)
        registry = jwt.JWTClaimsRegistry(
            now=int(self.clock.now().timestamp()), leeway=_LEEWAY_SECONDS,
            iss={"essential": True, "value": self.settings.reporter_oidc_issuer},
            aud={"essential": True, "value": self.settings.reporter_oidc_audience},
            exp={"essential": True}, sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except (JoseError, ValueError, TypeError) as exc:
            reason = (exc.description or exc.error) if isinstance(exc, JoseError) else "malformed claims"
            raise Refusal(401, f"token refused: {reason}", "invalid_token",
                          headers=_BEARER_INVALID) from None
        if nonce is not None and not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise Refusal(401, "token refused: nonce does not match this sign-in", "invalid_token")
        return claims

    async def _decode(self, token: str, *, refresh: bool) -> jwt.Token:
        keys = await self._key_set(refresh=refresh)
        try:
            return jwt.decode(token, keys, algorithms=list(ALGORITHMS))
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            if not refresh and _may_be_unknown_key(exc):
                return await self._decode(token, refresh=True)
            raise Refusal(401, "token signature does not verify under the issuer's keys", "invalid_token",
                          headers=_BEARER_INVALID) from None

    def principal(self, claims: dict[str, Any]) -> Principal:
        settings = self.settings
        wanted = claims.get(settings.reporter_oidc_role_claim)
        values = [wanted] if isinstance(wanted, str) else [v for v in wanted or [] if isinstance(v, str)] \
            if isinstance(wanted, list) else []
        mapped = {settings.reporter_oidc_role_map[v] for v in values if v in settings.reporter_oidc_role_map}
        role = next((r for r in ROLES if r in mapped), None)
        if role is None:
            raise Refusal(403, f"the identity provider gave this user no reporter role (claim "
                               f"{settings.reporter_oidc_role_claim!r})", "no_role")
        email = claims.get("email")
        if not isinstance(email, str) or claims.get("email_verified") is False:
            email = None
        if role == DEVELOPER and email is None:
            raise Refusal(403, "a developer is identified by a verified e-mail claim, and the token has none",
                          "no_email")
        return Principal(
            tenant_id=settings.reporter_oidc_tenant or settings.reporter_oidc_org,
            org_id=settings.reporter_oidc_org, role=role, subject=f"oidc:{claims['sub']}", credential="oidc",
            user_email=email,
        )

    async def endpoints(self) -> tuple[str, str]:
        """``(authorization endpoint, token endpoint)``: from the settings, else the discovery document."""
        s = self.settings
        if s.reporter_oidc_authorization_url and s.reporter_oidc_token_url:
            return s.reporter_oidc_authorization_url, s.reporter_oidc_token_url
        if self._endpoints is None:
            document = await fetch_json(s.reporter_oidc_issuer.rstrip("/") + "/.well-known/openid-configuration")
            authorization = s.reporter_oidc_authorization_url or document.get("authorization_endpoint")
            token = s.reporter_oidc_token_url or document.get("token_endpoint")
            if not isinstance(authorization, str) or not isinstance(token, str):
                raise IdentityProviderUnavailable("the discovery document names no authorization or token endpoint")
            self._endpoints = (authorization, token)
        return self._endpoints

    async def exchange_code(self, code: str, verifier: str, redirect_uri: str) -> str:
        """The ID token the token endpoint gives for an authorization code (and its PKCE verifier)."""
        _, token_url = await self.endpoints()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": self.settings.reporter_oidc_audience, "code_verifier": verifier}
        if self.settings.reporter_oidc_client_secret:
            form["client_secret"] = self.settings.reporter_oidc_client_secret
        answer = await fetch_json(token_url, form)
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise IdentityProviderUnavailable("the token endpoint returned no id_token")
        return id_token


def _may_be_unknown_key(exc: Exception) -> bool:
    return "key" in type(exc).__name__.lower() or "key" in str(exc).lower()
