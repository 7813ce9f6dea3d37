"""HTTP Basic ``org:licence`` authentication as a Starlette authentication backend."""

from __future__ import annotations

import base64
import binascii

from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, BaseUser
from starlette.requests import HTTPConnection

from shared.clock import Clock
from shared.licensing import License, LicenseRefused, LicenseVerifier


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


class LicenseAuthBackend(AuthenticationBackend):
    def __init__(self, verifier: LicenseVerifier, clock: Clock, entitlement: str) -> None:
        self.verifier = verifier
        self.clock = clock
        self.entitlement = entitlement

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        header = conn.headers.get("authorization")
        if not header:
            raise CredentialsRefused("missing credentials", forbidden=False, reason="no_credentials")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise CredentialsRefused("expected HTTP Basic credentials", forbidden=False, reason="bad_scheme")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsRefused(
                "Basic credentials are not valid base64", forbidden=False, reason="bad_base64"
            ) from None
        org, sep, token = decoded.partition(":")
        if not sep or not org or not token:
            raise CredentialsRefused("expected org:licence-key", forbidden=False, reason="bad_credentials")
        try:
            lic = self.verifier.verify(org, token, now=self.clock.now(), entitlement=self.entitlement)
        except LicenseRefused as refused:
            raise CredentialsRefused(
                str(refused),
                forbidden=not refused.problem.is_authentication_failure,
                reason=refused.problem.value,
            ) from None
        return AuthCredentials([self.entitlement]), LicensedOrg(lic)
