from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.keys import Ed25519Signer
from shared.licensing import (
    OTEL_INGEST,
    LicenseProblem,
    LicenseRefused,
    LicenseVerifier,
    issue_license,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def issuer() -> Ed25519Signer:
    return Ed25519Signer.generate()


def verifier_for(issuer: Ed25519Signer) -> LicenseVerifier:
    return LicenseVerifier.from_public_keys([issuer.public_key])


def test_issued_licence_verifies_and_carries_tenancy(issuer: Ed25519Signer) -> None:
    lic, token = issue_license(issuer, org_id="acme", tenant_id="t-acme", now=NOW)
    got = verifier_for(issuer).verify("acme", token, now=NOW + timedelta(days=1))
    assert got == lic
    assert got.tenant_id == "t-acme"
    assert OTEL_INGEST in got.entitlements
    assert got.key_id == issuer.key_id


def _tamper(token: str) -> str:
    """Same signature, payload edited to claim another tenant."""
    prefix, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["tenant"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return ".".join([prefix, forged, signature])


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("garbage", LicenseProblem.MALFORMED),
        ("tampered", LicenseProblem.BAD_SIGNATURE),
        ("other_org", LicenseProblem.ORG_MISMATCH),
        ("expired", LicenseProblem.EXPIRED),
        ("revoked", LicenseProblem.REVOKED),
        ("not_entitled", LicenseProblem.NOT_ENTITLED),
        ("unknown_issuer", LicenseProblem.UNKNOWN_KEY),
    ],
)
def test_refusals(issuer: Ed25519Signer, case: str, problem: LicenseProblem) -> None:
    verifier = verifier_for(issuer)
    lic, token = issue_license(issuer, org_id="acme", now=NOW, valid_for=timedelta(days=30))
    org, now = "acme", NOW
    if case == "garbage":
        token = "not-a-licence"
    elif case == "tampered":
        token = _tamper(token)
    elif case == "other_org":
        org = "globex"
    elif case == "expired":
        now = NOW + timedelta(days=31)
    elif case == "revoked":
        verifier.replace_revocations([lic.license_id])
    elif case == "not_entitled":
        _, token = issue_license(issuer, org_id="acme", now=NOW, entitlements=["reporting"])
    elif case == "unknown_issuer":
        _, token = issue_license(Ed25519Signer.generate(), org_id="acme", now=NOW)
    with pytest.raises(LicenseRefused) as refused:
        verifier.verify(org, token, now=now)
    assert refused.value.problem is problem


def test_authentication_failures_are_401_and_policy_failures_are_403() -> None:
    assert LicenseProblem.BAD_SIGNATURE.is_authentication_failure
    assert LicenseProblem.ORG_MISMATCH.is_authentication_failure
    assert not LicenseProblem.EXPIRED.is_authentication_failure
    assert not LicenseProblem.REVOKED.is_authentication_failure
    assert not LicenseProblem.NOT_ENTITLED.is_authentication_failure
