"""Licence authentication shared by the receiver (ingest) and the reporter (which refuses licences for reads):
HTTP Basic ``org:licence-key`` as a Starlette authentication backend, and the issuer's public-key file.

The licence is verified offline (signature, org, expiry, revocation list held in memory), so no request
waits on the database. 401 means "these credentials are not trustworthy" and carries ``WWW-Authenticate``;
403 means "a genuine licence that does not allow this" (expired, revoked, not entitled).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, BaseUser
from starlette.requests import HTTPConnection

from shared.clock import Clock
from shared.keys import KeyMaterialError
from shared.licensing import License, LicenseRefused, LicenseVerifier

# A Basic header for a real licence is a few hundred bytes; refuse to decode anything far larger.
_MAX_AUTHORIZATION_LENGTH = 8192


class LicensedOrg(BaseUser):
    def __init__(self, license: License) -> None:
        self.license = license

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.license.org_id

    @property
    def identity(self) -> str:
        return self.license.license_id


class CredentialsRefused(AuthenticationError):
    def __init__(self, message: str, *, forbidden: bool, reason: str) -> None:
        super().__init__(message)
        self.forbidden = forbidden
        self.reason = reason


def _unauthenticated(message: str, reason: str) -> CredentialsRefused:
    return CredentialsRefused(message, forbidden=False, reason=reason)


def parse_basic(header: str | None) -> tuple[str, str]:
    """``(user, password)`` from an Authorization header, or CredentialsRefused (always a 401)."""
    if not header:
        raise _unauthenticated("missing credentials: send HTTP Basic org:licence-key", "no_credentials")
    if len(header) > _MAX_AUTHORIZATION_LENGTH:
        raise _unauthenticated("Authorization header is too long", "bad_credentials")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise _unauthenticated("expected HTTP Basic credentials", "bad_scheme")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise _unauthenticated("Basic credentials are not valid base64 of UTF-8 text", "bad_base64") from None
    # RFC 7617: the user id ends at the first colon; the password may contain colons.
    user, separator, password = decoded.partition(":")
    if not separator or not user or not password:
        raise _unauthenticated("expected org:licence-key in the Basic credentials", "bad_credentials")
    return user, password


class LicenseAuthBackend(AuthenticationBackend):
    def __init__(self, verifier: LicenseVerifier, clock: Clock, entitlement: str) -> None:
        self.verifier = verifier
        self.clock = clock
        self.entitlement = entitlement

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        org, token = parse_basic(conn.headers.get("authorization"))
        try:
            lic = self.verifier.verify(org, token, now=self.clock.now(), entitlement=self.entitlement)
        except LicenseRefused as refused:
            raise CredentialsRefused(
                str(refused),
                forbidden=not refused.problem.is_authentication_failure,
                reason=refused.problem.value,
            ) from None
        return AuthCredentials([self.entitlement]), LicensedOrg(lic)


def load_issuer_public_keys(path: str) -> list[bytes]:
    file = Path(path)
    if not file.is_file():
        raise KeyMaterialError(f"licence public key file {file} does not exist")
    keys = []
    for raw_line in file.read_text().splitlines():
        line = raw_line.strip()
        if line and not line.startswith("#"):
            try:
                key = base64.b64decode(line, validate=True)
            except ValueError:
                raise KeyMaterialError(f"{file}: not base64: {line[:12]}...") from None
            if len(key) != 32:
                raise KeyMaterialError(f"{file}: not a 32-byte Ed25519 public key: {line[:12]}...")
            keys.append(key)
    if not keys:
        raise KeyMaterialError(f"licence public key file {file} holds no keys")
    return keys
