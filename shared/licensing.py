"""Licence keys: Ed25519-signed tokens verified offline on every request.

Format: ``lic1.<base64url(payload)>.<base64url(signature)>`` where the payload is RFC 8785 JSON and the
signature covers the ASCII bytes ``lic1.<base64url(payload)>``. The tenant a batch belongs to comes from
here and only from here.

Entitlements name capabilities. ``otel_ingest`` (sending OpenTelemetry to the receiver) is an Enterprise
capability and the only one licences are issued with: a licence sits in every developer's Claude Code
settings, so it must never open the audit log. Reading is done with reporting tokens or OIDC
(shared/reporting_tokens.py). ``reporting`` is still understood on licences issued before that change: the
reporter accepts them, read-only, with a warning, until they are re-issued. A licence without
``otel_ingest`` authenticates but is refused (403) by the receiver.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import rfc8785

from shared.keys import Signer, key_id_for, verify_signature

TOKEN_PREFIX = "lic1"  # noqa: S105 - a format tag, not a secret
PAYLOAD_VERSION = 1
OTEL_INGEST = "otel_ingest"
REPORTING = "reporting"
DEFAULT_ENTITLEMENTS = (OTEL_INGEST,)
KNOWN_ENTITLEMENTS: Mapping[str, str] = {
    OTEL_INGEST: "Enterprise: send Claude Code / Cowork OpenTelemetry to the receiver",
    REPORTING: "legacy: read audit reports (no longer issued by auditctl; use reporting tokens)",
}
# What auditctl issues: reads take reporting tokens, never the ingest secret.
ISSUABLE_ENTITLEMENTS = (OTEL_INGEST,)

# Org ids are HTTP Basic user names, so never a colon; both ids travel in Kafka headers and metric labels.
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
# Tokens are a few hundred bytes; anything much longer is not worth decoding.
_MAX_TOKEN_LENGTH = 4096


def valid_identifier(value: str) -> bool:
    return _IDENTIFIER.fullmatch(value) is not None


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
            "v": PAYLOAD_VERSION,
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
    """Sign a licence; raises ValueError for ids or entitlements the receiver could never accept."""
    tenant_id = tenant_id or org_id
    for name, value in (("org id", org_id), ("tenant id", tenant_id)):
        if not valid_identifier(value):
            raise ValueError(f"{name} {value!r} must be 1-128 of letters, digits and . _ @ - (no colon)")
    wanted = frozenset(entitlements)
    unknown = sorted(wanted - KNOWN_ENTITLEMENTS.keys())
    if unknown:
        raise ValueError(f"unknown entitlement(s): {', '.join(unknown)}; known: {', '.join(KNOWN_ENTITLEMENTS)}")
    if not wanted:
        raise ValueError("a licence needs at least one entitlement")
    if valid_for <= timedelta(0):
        raise ValueError("a licence must be valid for a positive time")
    issued_at = (now or datetime.now(UTC)).replace(microsecond=0)
    lic = License(
        license_id=str(uuid.uuid4()),
        org_id=org_id,
        tenant_id=tenant_id,
        entitlements=wanted,
        issued_at=issued_at,
        expires_at=issued_at + valid_for,
        key_id=issuer.key_id,
    )
    body = f"{TOKEN_PREFIX}.{_b64url(rfc8785.dumps(lic.payload()))}"
    return lic, f"{body}.{_b64url(issuer.sign(body.encode()))}"


def _parse_payload(payload: Mapping[str, object]) -> License:
    if payload.get("v", PAYLOAD_VERSION) != PAYLOAD_VERSION:
        raise LicenseRefused(LicenseProblem.MALFORMED, "licence payload version is not supported")
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
    except (KeyError, TypeError, ValueError, OverflowError, OSError) as exc:
        raise LicenseRefused(LicenseProblem.MALFORMED, "licence payload is incomplete") from exc


@dataclass
class LicenseVerifier:
    """Checks a Basic ``org:licence`` pair with no database round trip; revocations are pushed in.

    A token whose signature verified once is remembered (by its SHA-256, in a bounded LRU), so the
    steady state costs a hash and a dictionary look-up instead of an Ed25519 verification per request.
    Everything that can change for a genuine licence (revocation, expiry, the org it is presented
    with, the entitlement asked for) is still checked on every call.
    """

    issuer_keys: Mapping[str, bytes]
    revoked: frozenset[str] = field(default_factory=frozenset)
    max_remembered: int = 10_000
    _verified: OrderedDict[bytes, License] = field(default_factory=OrderedDict, repr=False)

    @classmethod
    def from_public_keys(cls, public_keys: Iterable[bytes]) -> LicenseVerifier:
        return cls(issuer_keys={key_id_for(key): key for key in public_keys})

    def replace_revocations(self, revoked: Iterable[str]) -> None:
        self.revoked = frozenset(revoked)

    def verify(self, org: str, token: str, *, now: datetime, entitlement: str = OTEL_INGEST) -> License:
        lic = self._genuine(token)
        if not hmac.compare_digest(org.encode(), lic.org_id.encode()):
            raise LicenseRefused(LicenseProblem.ORG_MISMATCH, "user name does not match the licence's org")
        if lic.license_id in self.revoked:
            raise LicenseRefused(LicenseProblem.REVOKED, "licence has been revoked")
        if now >= lic.expires_at:
            raise LicenseRefused(LicenseProblem.EXPIRED, "licence has expired")
        if entitlement not in lic.entitlements:
            raise LicenseRefused(LicenseProblem.NOT_ENTITLED, f"licence lacks the {entitlement} entitlement")
        return lic

    def _genuine(self, token: str) -> License:
        """The licence a token carries, once its signature is known to verify under a trusted key."""
        if len(token) > _MAX_TOKEN_LENGTH:
            raise LicenseRefused(LicenseProblem.MALFORMED, "licence key is too long")
        fingerprint = hashlib.sha256(token.encode()).digest()
        remembered = self._verified.get(fingerprint)
        if remembered is not None:
            self._verified.move_to_end(fingerprint)
            return remembered
        lic = self._verify_signature(token)
        self._verified[fingerprint] = lic
        if len(self._verified) > self.max_remembered:
            self._verified.popitem(last=False)
        return lic

    def _verify_signature(self, token: str) -> License:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise LicenseRefused(LicenseProblem.MALFORMED, "licence key is not a lic1 token")
        try:
            payload = json.loads(_unb64url(parts[1]))
            signature = _unb64url(parts[2])
        except (ValueError, UnicodeDecodeError, RecursionError):
            # RecursionError: a payload nested deeper than the parser's stack, sent before any signature check.
            raise LicenseRefused(LicenseProblem.MALFORMED, "licence key is not valid base64url JSON") from None
        if not isinstance(payload, dict):
            raise LicenseRefused(LicenseProblem.MALFORMED, "licence payload is not an object")
        lic = _parse_payload(payload)
        public_key = self.issuer_keys.get(lic.key_id)
        if public_key is None:
            raise LicenseRefused(LicenseProblem.UNKNOWN_KEY, "licence was issued by an unknown key")
        if not verify_signature(public_key, f"{parts[0]}.{parts[1]}".encode(), signature):
            raise LicenseRefused(LicenseProblem.BAD_SIGNATURE, "licence signature does not verify")
        return lic
