"""``auditctl license issue|list|show|revoke`` against a real PostgreSQL, and the keys it issues verified
the way the receiver verifies them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from services.auditctl.cli import main
from shared.keys import load_signer, write_new_key
from shared.licensing import OTEL_INGEST, REPORTING, LicenseProblem, LicenseRefused, LicenseVerifier


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    key_file = tmp_path / "license-issuer.key"
    write_new_key(key_file)
    return {"DATABASE_URL": database_url, "LICENSE_ISSUER_KEY_FILE": str(key_file)}


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["license", *args], env=env, catch_exceptions=False)


def verifier(env: dict[str, str]) -> LicenseVerifier:
    return LicenseVerifier.from_public_keys([load_signer(file=env["LICENSE_ISSUER_KEY_FILE"]).public_key])


def test_issue_prints_a_key_the_receiver_accepts_and_records_it(cli_env: dict[str, str]) -> None:
    issued = run(cli_env, "issue", "--org", "acme", "--tenant", "tenant-acme", "--days", "30")
    assert issued.exit_code == 0, issued.output
    token = issued.stdout.strip().splitlines()[-1]
    lic = verifier(cli_env).verify("acme", token, now=datetime.now(UTC))
    assert (lic.org_id, lic.tenant_id) == ("acme", "tenant-acme")
    assert lic.entitlements == {OTEL_INGEST}  # ingest only: reading takes a reporting token
    assert lic.license_id in issued.stderr
    [listed] = [json.loads(line) for line in run(cli_env, "list").stdout.splitlines()]
    assert listed["license_id"] == lic.license_id
    assert listed["status"] == "active"
    assert listed["entitlements"] == [OTEL_INGEST]
    assert token not in run(cli_env, "list").stdout  # keys are never stored, so never listed
    shown = json.loads(run(cli_env, "show", lic.license_id).stdout)
    assert shown["tenant_id"] == "tenant-acme"


def test_licences_are_never_issued_for_reading(cli_env: dict[str, str]) -> None:
    refused = CliRunner().invoke(main, ["license", "issue", "--org", "acme", "--entitlement", REPORTING], env=cli_env)
    assert refused.exit_code != 0 and "reporting" in refused.output
    token = run(cli_env, "issue", "--org", "acme").stdout.strip().splitlines()[-1]
    with pytest.raises(LicenseRefused) as not_entitled:
        verifier(cli_env).verify("acme", token, now=datetime.now(UTC), entitlement=REPORTING)
    assert not_entitled.value.problem is LicenseProblem.NOT_ENTITLED


def test_revoke_lists_as_revoked_and_refuses_to_revoke_twice_or_unknown(cli_env: dict[str, str]) -> None:
    first = run(cli_env, "issue", "--org", "acme").stderr.split()[1]
    second = run(cli_env, "issue", "--org", "globex").stderr.split()[1]
    revoked = run(cli_env, "revoke", first, "--reason", "contract ended")
    assert revoked.exit_code == 0
    assert f"revoked {first}" in revoked.stdout
    again = CliRunner().invoke(main, ["license", "revoke", first], env=cli_env)
    assert again.exit_code != 0
    assert "already revoked" in again.output
    unknown = CliRunner().invoke(main, ["license", "revoke", "no-such-licence"], env=cli_env)
    assert unknown.exit_code != 0
    assert "no licence" in unknown.output
    rows = {row["license_id"]: row for row in map(json.loads, run(cli_env, "list").stdout.splitlines())}
    assert rows[first]["status"] == "revoked"
    assert rows[first]["revoked_reason"] == "contract ended"
    assert rows[second]["status"] == "active"
    only_revoked = [json.loads(line)["license_id"] for line in run(cli_env, "list", "--status", "revoked").stdout
                    .splitlines()]
    assert only_revoked == [first]
    only_globex = [json.loads(line)["org_id"] for line in run(cli_env, "list", "--org", "globex").stdout.splitlines()]
    assert only_globex == ["globex"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org", "has:colon"], "org id"),
        (["--org", "acme", "--entitlement", "superpowers"], "superpowers"),
        (["--org", "acme", "--days", "0"], "0"),
    ],
)
def test_issue_refuses_what_could_never_work(cli_env: dict[str, str], args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["license", "issue", *args], env=cli_env)
    assert result.exit_code != 0
    assert message in result.output
    assert run(cli_env, "list").stdout == ""


def test_issue_without_an_issuer_key_says_so(database_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["license", "issue", "--org", "acme"], env={
        "DATABASE_URL": database_url, "LICENSE_ISSUER_KEY_FILE": str(tmp_path / "missing.key")})
    assert result.exit_code != 0
    assert "does not exist" in result.output
