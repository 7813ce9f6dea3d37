"""Reporter configuration: read once from the environment, frozen, and refused at start-up when inconsistent."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shared.settings import CommonSettings


class ReporterSettings(CommonSettings):
    reporter_host: str = Field(default="0.0.0.0", description="Address the reporting API and portal bind to.")  # noqa: S104
    reporter_port: int = Field(default=8080, ge=1, le=65535, description="Port of the reporting API and portal.")
    reporter_event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", description="Event loop of the reporter process."
    )
    license_public_keys_file: str = Field(
        default="var/keys/license-issuer.pub",
        description="File of base64 Ed25519 public keys (one a line) whose licences are accepted.",
    )
    revocation_refresh_seconds: float = Field(
        default=30.0, gt=0,
        description="How often the licence revocation list and the reporting tokens are re-read from PostgreSQL "
        "(a revoked token is refused within this long).",
    )
    reporter_access_audit_timeout_seconds: float = Field(
        default=5.0, gt=0,
        description="How long an answer that discloses content or proofs waits for the broker to acknowledge "
        "its access event; past it (or with the broker down) the read is refused with 503, never disclosed "
        "unaudited.",
    )
    reporter_access_auth_key_file: str = Field(
        default="var/keys/canonical-reporter.key",
        description="Key file whose first key authenticates the reporter's access events on the canonical topic "
        "(a key of its own, not the redactors'); the signers' CANONICAL_AUTH_KEYRING_FILE must hold it.",
    )
    reporter_session_idle_minutes: int = Field(
        default=30, ge=1, description="A portal sign-in ends after this long without a request."
    )
    reporter_session_max_hours: int = Field(
        default=12, ge=1, description="A portal sign-in ends this long after it began, however busy."
    )
    reporter_secure_cookies: Literal["auto", "always"] = Field(
        default="auto",
        description="auto: the session cookie is Secure when the request came over TLS; always: also behind a "
        "TLS-terminating proxy that forwards plain HTTP.",
    )
    reporter_oidc_issuer: str = Field(
        default="", description="OIDC issuer (iss) whose ID and access tokens are accepted; empty turns OIDC off."
    )
    reporter_oidc_audience: str = Field(
        default="", description="Audience (aud) an OIDC token must name; also the client id of the portal login."
    )
    reporter_oidc_jwks_url: str = Field(default="", description="URL of the issuer's JSON Web Key Set.")
    reporter_oidc_org: str = Field(
        default="", description="Org whose audit log the issuer's users read (one issuer serves one org)."
    )
    reporter_oidc_tenant: str = Field(default="", description="Its tenant id; empty means the org id.")
    reporter_oidc_role_claim: str = Field(
        default="roles", description="Claim holding the user's role(s): a string or a list of strings."
    )
    reporter_oidc_role_map: dict[str, str] = Field(
        default={"admin": "admin", "auditor": "auditor", "analyst": "analyst", "developer": "developer"},
        description="JSON map from role-claim values to reporter roles; the most privileged mapped one wins.",
    )
    reporter_oidc_client_secret: str = Field(
        default="", description="Client secret for the token endpoint, if the identity provider wants one (PKCE "
        "is always used)."
    )
    reporter_oidc_authorization_url: str = Field(
        default="", description="Authorization endpoint; empty reads it from the issuer's discovery document."
    )
    reporter_oidc_token_url: str = Field(
        default="", description="Token endpoint; empty reads it from the issuer's discovery document."
    )
    reporter_public_url: str = Field(
        default="", description="Public base URL of the portal (for the OIDC redirect URI); empty uses the "
        "request's own."
    )
    reporter_db_pool_size: int = Field(
        default=12, ge=4, le=100,
        description="PostgreSQL connections of the reporter: requests (a usage report runs its queries on up to four "
        "at once) and the background fold and chain check.",
    )
    reporter_statement_timeout_ms: int = Field(
        default=10_000,
        ge=100,
        description="Any reporting query running longer is cancelled (503), never left to pile up.",
    )
    reporter_page_size: int = Field(default=50, ge=1, description="Rows per page when a request does not say.")
    reporter_max_page_size: int = Field(default=500, ge=1, description="Most rows one page may ask for.")
    reporter_max_usage_days: int = Field(
        default=400, ge=1, description="Longest window, in days, one usage request may cover."
    )
    reporter_rollup_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often new audit rows are folded into the session and usage rollups."
    )
    reporter_rollup_batch_rows: int = Field(
        default=20_000, ge=1, description="Most audit rows folded into the rollups in one transaction."
    )
    reporter_inline_fold_rows: int = Field(
        default=5_000,
        ge=0,
        description="Before answering a usage or session-list request, fold up to this many pending rows of the "
        "caller's tenant, so answers are current; 0 leaves it to the background fold.",
    )
    reporter_verify_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often the background chain check advances."
    )
    reporter_verify_batch_rows: int = Field(
        default=5_000, ge=1, description="Most chain rows checked per tenant and pass of the background chain check."
    )
    reporter_rescan_batch_rows: int = Field(
        default=1_000,
        ge=0,
        description="Rows re-checked per tenant and pass by the rolling full rescan, which catches rows altered "
        "after they were first checked; 0 turns the rescan off.",
    )
    reporter_shutdown_grace_seconds: float = Field(
        default=10.0, gt=0, description="After SIGTERM, how long in-flight requests may take to finish."
    )

    @field_validator("reporter_oidc_role_map", mode="before")
    @classmethod
    def _role_map(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> ReporterSettings:
        if self.reporter_page_size > self.reporter_max_page_size:
            raise ValueError("REPORTER_PAGE_SIZE must not exceed REPORTER_MAX_PAGE_SIZE")
        roles = {"admin", "auditor", "analyst", "developer"}
        unknown = sorted(set(self.reporter_oidc_role_map.values()) - roles)
        if unknown:
            raise ValueError(f"REPORTER_OIDC_ROLE_MAP maps to unknown roles {unknown}; roles: {sorted(roles)}")
        if self.reporter_oidc_issuer and not (self.reporter_oidc_audience and self.reporter_oidc_jwks_url
                                              and self.reporter_oidc_org):
            raise ValueError("REPORTER_OIDC_ISSUER needs REPORTER_OIDC_AUDIENCE, REPORTER_OIDC_JWKS_URL and "
                             "REPORTER_OIDC_ORG")
        return self

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.reporter_oidc_issuer)
