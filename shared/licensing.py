"""Licence keys: Ed25519-signed tokens verified offline on every request.

Format: ``lic1.<base64url(payload)>.<base64url(signature)>`` where the payload is RFC 8785 JSON and the
signature covers the ASCII bytes ``lic1.<base64url(payload)>``. The tenant a batch belongs to comes from
here and only from here.
"""

from __future__ import annotations

import base64
import hmac
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import rfc8785

from shared.keys import Signer, key_id_for, verify_signature

TOKEN_PREFIX = "lic1"
OTEL_INGEST = "otel_ingest"
REPORTING = "reporting"
DEFAULT_ENTITLEMENTS = (OTEL_INGEST, REPORTING)


class LicenseProblem(Enum):
    """Why a credential was refused; the receiver maps each to a status code."""

    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    ORG_MISMATCH = "org_mismatch"
    EXPIRED = "expired"
    REVOKED = "revoked"
    NOT_ENTITLED = "not_entitled"

    @property
    def is_authentication_failure(self) -> bool:
        """401 for credentials we cannot trust; 403 for a genuine licence that does not allow this."""
        return self in {
            LicenseProblem.MALFORMED,
            LicenseProblem.UNKNOWN_KEY,
            LicenseProblem.BAD_SIGNATURE,
            LicenseProblem.ORG_MISMATCH,
        }


class LicenseRefused(Exception):
    def __init__(self, problem: LicenseProblem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem


@dataclass(frozen=True)
class License:
    license_id: str
    org_id: str
    tenant_id: str
    entitlements: frozenset[str]
    issued_at: datetime
    expires_at: datetime
    key_id: str

    def payload(self) -> dict[str, Any]:
        return {
            "v": 1,
            "lid": self.license_id,
            "org": self.org_id,
            "tenant": self.tenant_id,
            "ent": sorted(self.entitlements),
            "iat": int(self.issued_at.timestamp()),
            "exp": int(self.expires_at.timestamp()),
            "kid": self.key_id,
        }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_license(
    issuer: Signer,
    *,
    org_id: str,
    tenant_id: str | None = None,
    entitlements: Iterable[str] = DEFAULT_ENTITLEMENTS,
    valid_for: timedelta = timedelta(days=365),
    now: datetime | None = None,
) -> tuple[License, str]:
    issued_at = (now or datetime.now(UTC)).replace(microsecond=0)
    lic = License(
        license_id=str(uuid.uuid4()),
        org_id=org_id,
        tenant_id=tenant_id or org_id,
        entitlements=frozenset(entitlements),
        issued_at=issued_at,
        expires_at=issued_at + valid_for,
        key_id=issuer.key_id,
    )
    body = f"{TOKEN_PREFIX}.{_b64url(rfc8785.dumps(lic.payload()))}"
    return lic, f"{body}.{_b64url(issuer.sign(body.encode()))}"


def _parse_payload(payload: Mapping[str, object]) -> License:
    try:
        entitlements = payload["ent"]
        if not isinstance(entitlements, list):
            raise TypeError("ent")
        return License(
            license_id=str(payload["lid"]),
            org_id=str(payload["org"]),
            tenant_id=str(payload["tenant"]),
            entitlements=frozenset(str(e) for e in entitlements),
            issued_at=datetime.fromtimestamp(int(str(payload["iat"])), UTC),
            expires_at=datetime.fromtimestamp(int(str(payload["exp"])), UTC),
            key_id=str(payload["kid"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LicenseRefused(LicenseProblem.MALFORMED, "licence payload is incomplete") from exc


@dataclass
class LicenseVerifier:
    """Checks a Basic ``org:licence`` pair with no database round trip; revocations are pushed in."""

    issuer_keys: Mapping[str, bytes]
    revoked: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_public_keys(cls, public_keys: Iterable[bytes]) -> LicenseVerifier:
        return cls(issuer_keys={key_id_for(key): key for key in public_keys})

    def replace_revocations(self, revoked: Iterable[str]) -> None:
        self.revoked = frozenset(revoked)

    def verify(self, org: str, token: str, *, now: datetime, entitlement: str = OTEL_INGEST) -> License:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise LicenseRefused(LicenseProblem.MALFORMED, "licence key is not a lic1 token")
        try:
            payload = json.loads(_unb64url(parts[1]))
            signature = _unb64url(parts[2])
        except ValueError as exc:
            raise LicenseRefused(LicenseProblem.MALFORMED, "licence key is not valid base64url JSON") from exc
        if not isinstance(payload, dict):
            raise LicenseRefused(LicenseProblem.MALFORMED, "licence payload is not an object")
        lic = _parse_payload(payload)
        public_key = self.issuer_keys.get(lic.key_id)
        if public_key is None:
            raise LicenseRefused(LicenseProblem.UNKNOWN_KEY, "licence was issued by an unknown key")
        if not verify_signature(public_key, f"{parts[0]}.{parts[1]}".encode(), signature):
            raise LicenseRefused(LicenseProblem.BAD_SIGNATURE, "licence signature does not verify")
        if not hmac.compare_digest(org.encode(), lic.org_id.encode()):
            raise LicenseRefused(LicenseProblem.ORG_MISMATCH, "user name does not match the licence's org")
        if lic.license_id in self.revoked:
            raise LicenseRefused(LicenseProblem.REVOKED, "licence has been revoked")
        if now >= lic.expires_at:
            raise LicenseRefused(LicenseProblem.EXPIRED, "licence has expired")
        if entitlement not in lic.entitlements:
            raise LicenseRefused(LicenseProblem.NOT_ENTITLED, f"licence lacks the {entitlement} entitlement")
        return lic
