"""Reporting token commands: issue, list, revoke. Tokens read the audit log; licences only ingest."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import click

from services.auditctl.running import run_async
from services.auditctl.settings import CliSettings
from shared.db.pool import connect
from shared.licensing import valid_identifier
from shared.reporting_tokens import ROLES, ReportingToken, issue_token, list_tokens, revoke_token

_RELATIVE = re.compile(r"(\d{1,6})([hdw])")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(value: str | None, now: datetime) -> datetime | None:
    """``30d``, ``12h``, ``2w``, an ISO date or an ISO date-time (UTC when no offset); ``never`` or nothing: no
    expiry. ValueError otherwise, or for a time not in the future."""
    if value is None or value == "never":
        return None
    relative = _RELATIVE.fullmatch(value)
    if relative:
        expires = now + timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    else:
        try:
            expires = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"--expires {value!r}: use 30d, 12h, 2w, an ISO date or date-time, or never") from None
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
    if expires <= now:
        raise ValueError(f"--expires {value!r} is not in the future")
    return expires


async def _tenant_of(dsn: str, org: str) -> str:
    """The tenant the org's licences file its rows under (the newest licence's), else the org id itself."""
    conn = await connect(dsn)
    try:
        tenant: str | None = await conn.fetchval(
            "SELECT tenant_id FROM licenses WHERE org_id = $1 ORDER BY issued_at DESC LIMIT 1", org
        )
    finally:
        await conn.close()
    return tenant or org


@click.group("token")
def token_group() -> None:
    """Reporting tokens (bearer credentials of the reporter): issue, list, revoke."""


@token_group.command("issue")
@click.option("--org", required=True, help="Organisation whose audit log the token reads.")
@click.option("--tenant", default=None, help="Tenant id (default: the tenant of the org's licences, else the org).")
@click.option("--role", required=True, type=click.Choice(ROLES), help="What the token may read (README: Roles).")
@click.option("--user", "user_email", default=None, help="E-mail of the person; required for developer.")
@click.option("--expires", default=None, help="30d, 12h, 2w, an ISO date or date-time, or never (default).")
@click.option("--description", default="", help="What the token is for; shown when listed.")
@click.pass_obj
def token_issue(settings: CliSettings, org: str, tenant: str | None, role: str, user_email: str | None,
                expires: str | None, description: str) -> None:
    """Issue a token; it is shown once, as the last line of standard output, and stored only hashed."""
    if not valid_identifier(org) or (tenant is not None and not valid_identifier(tenant)):
        raise click.ClickException("org and tenant ids are 1-128 of letters, digits and . _ @ -")
    try:
        expires_at = parse_expiry(expires, datetime.now(UTC))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

    async def issue() -> tuple[ReportingToken, str]:
        tenant_id = tenant or await _tenant_of(settings.database_url, org)
        conn = await connect(settings.database_url)
        try:
            return await issue_token(conn, tenant_id=tenant_id, org_id=org, role=role, user_email=user_email,
                                     expires_at=expires_at, created_by="auditctl", description=description)
        finally:
            await conn.close()

    try:
        row, token = run_async(issue)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    who = f" for {row.user_email}" if row.user_email else ""
    until = row.expires_at.isoformat() if row.expires_at else "never"
    click.echo(f"token {row.token_id}: role {row.role}{who}, org {row.org_id} (tenant {row.tenant_id}), expires "
               f"{until}. It is shown only now; send it as 'Authorization: Bearer <token>'.", err=True)
    click.echo(token)


@token_group.command("list")
@click.option("--tenant", default=None, help="Only this tenant's tokens.")
@click.pass_obj
def token_list(settings: CliSettings, tenant: str | None) -> None:
    """List tokens as JSON lines (only digests are stored, so tokens are never shown)."""
    async def fetch() -> list[ReportingToken]:
        conn = await connect(settings.database_url)
        try:
            return await list_tokens(conn, tenant_id=tenant)
        finally:
            await conn.close()

    now = datetime.now(UTC)
    for row in run_async(fetch):
        click.echo(json.dumps(row.public(now)))


@token_group.command("revoke")
@click.argument("token_id")
@click.pass_obj
def token_revoke(settings: CliSettings, token_id: str) -> None:
    """Revoke a token; reporters refuse it (401) from their next refresh, and its portal sessions end now."""
    async def revoke() -> str:
        conn = await connect(settings.database_url)
        try:
            return await revoke_token(conn, token_id, revoked_by="auditctl")
        finally:
            await conn.close()

    outcome = run_async(revoke)
    if outcome != "revoked":
        raise click.ClickException(f"token {token_id}: {'no such token' if outcome == 'unknown' else outcome}")
    click.echo(f"revoked {token_id}")


COMMANDS = [token_group]
