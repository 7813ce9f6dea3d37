"""A local OpenID Connect issuer for the tests: keys generated here, its JWKS, discovery document, a minimal
authorization endpoint (the "user" signing in is chosen by the test) and token endpoint (authorization code
with PKCE S256), served on loopback. Only what the reporter's checks need, and strict where they are."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey

AUDIENCE = "audit-portal"


def new_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid, "alg": "ES256", "use": "sig"})


@dataclass
class PendingCode:
    claims: dict[str, Any]
    challenge: str
    redirect_uri: str
    nonce: str


@dataclass
class LocalIssuer:
    keys: list[ECKey] = field(default_factory=lambda: [new_key("key-1")])
    user: dict[str, Any] = field(default_factory=dict)  # the claims of whoever signs in next
    codes: dict[str, PendingCode] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def settings(self, org: str, tenant: str | None = None) -> dict[str, Any]:
        return {
            "reporter_oidc_issuer": self.url, "reporter_oidc_audience": AUDIENCE,
            "reporter_oidc_jwks_url": f"{self.url}/jwks", "reporter_oidc_org": org,
            "reporter_oidc_tenant": tenant or org,
            "reporter_oidc_role_map": {"audit-admins": "admin", "audit-readers": "auditor",
                                       "finance": "analyst", "engineering": "developer"},
            "reporter_oidc_role_claim": "groups",
        }

    def token(self, key: ECKey | None = None, **claims: Any) -> str:
        now = int(time.time())
        signing = key or self.keys[0]
        body = {"iss": self.url, "aud": AUDIENCE, "iat": now, "exp": now + 300, "sub": "user-1", **claims}
        return jwt.encode({"alg": "ES256", "kid": signing.kid}, {k: v for k, v in body.items() if v is not None},
                          signing)

    def start(self) -> LocalIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _json(self, body: dict[str, Any], status: int = 200) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/.well-known/openid-configuration":
                    self._json({"issuer": issuer.url, "authorization_endpoint": f"{issuer.url}/authorize",
                                "token_endpoint": f"{issuer.url}/token", "jwks_uri": f"{issuer.url}/jwks",
                                "code_challenge_methods_supported": ["S256"]})
                elif url.path == "/jwks":
                    self._json({"keys": [k.as_dict(private=False) for k in issuer.keys]})
                elif url.path == "/authorize":
                    q = {k: v[0] for k, v in parse_qs(url.query).items()}
                    if q.get("code_challenge_method") != "S256" or not q.get("code_challenge") \
                            or q.get("client_id") != AUDIENCE or q.get("response_type") != "code":
                        self._json({"error": "invalid_request"}, 400)
                        return
                    code = secrets.token_urlsafe(16)
                    issuer.codes[code] = PendingCode(dict(issuer.user), q["code_challenge"], q["redirect_uri"],
                                                     q["nonce"])
                    self.send_response(302)
                    self.send_header("Location", f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}")
                    self.end_headers()
                else:
                    self._json({"error": "not_found"}, 404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                issuer.token_requests.append(form)
                pending = issuer.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if pending is None or challenge != pending.challenge or form.get("redirect_uri") != \
                        pending.redirect_uri or form.get("grant_type") != "authorization_code":
                    self._json({"error": "invalid_grant"}, 400)
                    return
                self._json({"id_token": issuer.token(nonce=pending.nonce, **pending.claims), "token_type": "Bearer"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
