"""``auditctl token issue|list|revoke`` (what ``make token`` runs) against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result

from services.auditctl.cli import main
from services.auditctl.tokens import parse_expiry
from shared.db.pool import connect
from shared.reporting_tokens import ReportingToken, list_tokens, token_digest, token_id_of


def run(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["token", *args], env={"DATABASE_URL": database_url})


def query(database_url: str, sql: str | None = None) -> Any:
    """The stored tokens, or the rows of ``sql``."""
    async def fetch() -> Any:
        conn = await connect(database_url)
        try:
            return [dict(r) for r in await conn.fetch(sql)] if sql else await list_tokens(conn)
        finally:
            await conn.close()

    return asyncio.run(fetch())


def stored(database_url: str) -> list[ReportingToken]:
    tokens: list[ReportingToken] = query(database_url)
    return tokens


def test_issue_prints_the_token_last_stores_only_its_digest_and_revokes(database_url: str) -> None:
    issued = run(database_url, "issue", "--org", "acme", "--role", "developer", "--user", "alice@acme.example",
                 "--expires", "30d")
    assert issued.exit_code == 0, issued.output
    token = issued.stdout.strip().splitlines()[-1]
    token_id = token_id_of(token)
    assert token_id is not None and token_id in issued.stderr
    [row] = stored(database_url)
    assert (row.tenant_id, row.org_id, row.role, row.user_email) == ("acme", "acme", "developer",
                                                                     "alice@acme.example")
    assert row.secret_sha256 == token_digest(token) and row.expires_at is not None
    assert token not in str(query(database_url, "SELECT * FROM reporting_tokens"))
    listed = [json.loads(line) for line in run(database_url, "list").stdout.splitlines()]
    assert [(t["token_id"], t["status"]) for t in listed] == [(token_id, "active")]
    assert token not in run(database_url, "list").stdout and "secret" not in listed[0]
    assert run(database_url, "revoke", token_id).exit_code == 0
    again = run(database_url, "revoke", token_id)
    assert again.exit_code != 0 and "already revoked" in again.output
    assert json.loads(run(database_url, "list").stdout)["status"] == "revoked"


def test_the_tenant_follows_the_orgs_licences(database_url: str) -> None:
    query(database_url, "INSERT INTO licenses (license_id, org_id, tenant_id, entitlements, issued_at, expires_at,"
                     " key_id) VALUES ('l1', 'acme', 'tenant-acme', '{otel_ingest}', now(), now() + interval '1 day',"
                     " 'k') RETURNING license_id")
    issued = run(database_url, "issue", "--org", "acme", "--role", "auditor")
    assert issued.exit_code == 0, issued.output
    [row] = stored(database_url)
    assert row.tenant_id == "tenant-acme" and row.expires_at is None


@pytest.mark.parametrize("args, complaint", [
    (("--role", "developer"), "--user"),
    (("--role", "root"), "root"),
    (("--role", "auditor", "--user", "not-an-email"), "e-mail"),
    (("--role", "auditor", "--expires", "yesterday"), "--expires"),
    (("--role", "auditor", "--expires", "2020-01-01"), "future"),
])
def test_bad_requests_are_refused(database_url: str, args: tuple[str, ...], complaint: str) -> None:
    refused = run(database_url, "issue", "--org", "acme", *args)
    assert refused.exit_code != 0 and complaint in refused.output


def test_expiry_forms() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2w", now) == now + timedelta(weeks=2)
    assert parse_expiry("2027-01-01", now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_expiry("never", now) is None and parse_expiry(None, now) is None
