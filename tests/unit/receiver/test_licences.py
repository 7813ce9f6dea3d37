"""Licence verification details the receiver relies on: the verified-token cache, ids, entitlements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared import keys, licensing
from shared.keys import Ed25519Signer
from shared.licence_auth import CredentialsRefused, parse_basic
from shared.licensing import LicenseProblem, LicenseRefused, LicenseVerifier, issue_license
from tests.unit.receiver.conftest import basic

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_a_verified_token_is_not_verified_again_but_every_policy_check_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issuer = Ed25519Signer.generate()
    verifier = LicenseVerifier.from_public_keys([issuer.public_key])
    lic, token = issue_license(issuer, org_id="acme", now=NOW, valid_for=timedelta(days=2))
    calls = []
    real = keys.verify_signature

    def counting(public_key: bytes, message: bytes, signature: bytes) -> bool:
        calls.append(1)
        return real(public_key, message, signature)

    monkeypatch.setattr(licensing, "verify_signature", counting)
    for _ in range(5):
        assert verifier.verify("acme", token, now=NOW) == lic
    assert len(calls) == 1
    with pytest.raises(LicenseRefused) as wrong_org:
        verifier.verify("globex", token, now=NOW)
    assert wrong_org.value.problem is LicenseProblem.ORG_MISMATCH
    with pytest.raises(LicenseRefused) as expired:
        verifier.verify("acme", token, now=NOW + timedelta(days=3))
    assert expired.value.problem is LicenseProblem.EXPIRED
    verifier.replace_revocations([lic.license_id])
    with pytest.raises(LicenseRefused) as revoked:
        verifier.verify("acme", token, now=NOW)
    assert revoked.value.problem is LicenseProblem.REVOKED
    assert len(calls) == 1


def test_a_bad_signature_is_never_remembered_as_good() -> None:
    issuer = Ed25519Signer.generate()
    verifier = LicenseVerifier.from_public_keys([issuer.public_key])
    _, token = issue_license(issuer, org_id="acme", now=NOW)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(LicenseRefused) as refused:
            verifier.verify("acme", forged, now=NOW)
        assert refused.value.problem in {LicenseProblem.BAD_SIGNATURE, LicenseProblem.MALFORMED}


def test_the_cache_is_bounded() -> None:
    issuer = Ed25519Signer.generate()
    verifier = LicenseVerifier.from_public_keys([issuer.public_key])
    verifier.max_remembered = 3
    tokens = [issue_license(issuer, org_id="acme", now=NOW)[1] for _ in range(5)]
    for token in tokens:
        verifier.verify("acme", token, now=NOW)
    assert len(verifier._verified) == 3


@pytest.mark.parametrize("org", ["", "has:colon", "spa ce", "x" * 129, "ünïcode"])
def test_ids_that_cannot_be_basic_user_names_are_refused_at_issue(org: str) -> None:
    with pytest.raises(ValueError, match="org id"):
        issue_license(Ed25519Signer.generate(), org_id=org)


def test_unknown_or_missing_entitlements_and_non_positive_validity_are_refused_at_issue() -> None:
    issuer = Ed25519Signer.generate()
    with pytest.raises(ValueError, match="unknown entitlement"):
        issue_license(issuer, org_id="acme", entitlements=["otel_ingest", "superpowers"])
    with pytest.raises(ValueError, match="at least one"):
        issue_license(issuer, org_id="acme", entitlements=[])
    with pytest.raises(ValueError, match="positive"):
        issue_license(issuer, org_id="acme", valid_for=timedelta(0))


def test_oversized_tokens_are_not_decoded() -> None:
    verifier = LicenseVerifier.from_public_keys([Ed25519Signer.generate().public_key])
    with pytest.raises(LicenseRefused) as refused:
        verifier.verify("acme", "lic1." + "A" * 10_000 + ".sig", now=NOW)
    assert refused.value.problem is LicenseProblem.MALFORMED


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("acme", "lic1.a.b"), ("acme", "lic1.a.b")),
        (basic("acme", "pass:with:colons"), ("acme", "pass:with:colons")),
        ("basic " + basic("acme", "k").split(" ")[1], ("acme", "k")),
    ],
)
def test_basic_credentials_parse(header: str, expected: tuple[str, str]) -> None:
    assert parse_basic(header) == expected


@pytest.mark.parametrize(
    "header",
    [None, "", "Basic", "Basic ", "Digest abc", "Basic ***", basic("", "k"), basic("acme", ""),
     "Basic " + "QQ==" * 3000, "Basic /w=="],
)
def test_bad_basic_credentials_are_refused_as_unauthenticated(header: str | None) -> None:
    with pytest.raises(CredentialsRefused) as refused:
        parse_basic(header)
    assert not refused.value.forbidden
