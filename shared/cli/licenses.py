"""Licence commands: issue, list, revoke."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import click

from shared.cli import run_async
from shared.cli.settings import CliSettings
from shared.db.pool import connect
from shared.keys import Ed25519Signer, KeyMaterialError, load_signer
from shared.licensing import DEFAULT_ENTITLEMENTS, License, issue_license


async def store_license(dsn: str, lic: License) -> None:
    conn = await connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO licenses (license_id, org_id, tenant_id, entitlements, issued_at, expires_at, key_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            lic.license_id, lic.org_id, lic.tenant_id, sorted(lic.entitlements), lic.issued_at,
            lic.expires_at, lic.key_id,
        )
    finally:
        await conn.close()


def _issuer(settings: CliSettings) -> Ed25519Signer:
    try:
        return load_signer(file=settings.license_issuer_key_file, env_var="AUDIT_LICENSE_ISSUER_KEY")
    except KeyMaterialError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("license")
def license_group() -> None:
    """Licences: issue, list, revoke."""


@license_group.command("issue")
@click.option("--org", required=True, help="Organisation id; also the Basic auth user name.")
@click.option("--tenant", default=None, help="Tenant id (defaults to the org id).")
@click.option("--days", default=365, show_default=True, type=int, help="Validity in days.")
@click.option("--entitlement", "entitlements", multiple=True, help="Entitlement (repeatable).")
@click.pass_obj
def license_issue(settings: CliSettings, org: str, tenant: str | None, days: int,
                  entitlements: tuple[str, ...]) -> None:
    """Issue a licence; the key is printed as the last line."""
    lic, token = issue_license(_issuer(settings), org_id=org, tenant_id=tenant,
                               entitlements=entitlements or DEFAULT_ENTITLEMENTS, valid_for=timedelta(days=days))
    run_async(lambda: store_license(settings.database_url, lic))
    click.echo(f"licence {lic.license_id} for org {lic.org_id} (tenant {lic.tenant_id}), "
               f"expires {lic.expires_at.date().isoformat()}", err=True)
    click.echo(token)


@license_group.command("list")
@click.option("--org", default=None, help="Only this organisation.")
@click.pass_obj
def license_list(settings: CliSettings, org: str | None) -> None:
    """List licences as JSON lines."""

    async def fetch() -> list[Any]:
        conn = await connect(settings.database_url)
        try:
            return list(await conn.fetch(
                "SELECT * FROM licenses WHERE $1::text IS NULL OR org_id = $1 ORDER BY issued_at", org))
        finally:
            await conn.close()

    for row in run_async(fetch):
        click.echo(json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in dict(row).items()}))


@license_group.command("revoke")
@click.argument("license_id")
@click.option("--reason", default="revoked by operator", help="Why; kept with the licence.")
@click.pass_obj
def license_revoke(settings: CliSettings, license_id: str, reason: str) -> None:
    """Revoke a licence; receivers refuse it at their next revocation refresh."""

    async def revoke() -> str:
        conn = await connect(settings.database_url)
        try:
            result: str = await conn.execute(
                "UPDATE licenses SET revoked_at = now(), revoked_reason = $2"
                " WHERE license_id = $1 AND revoked_at IS NULL", license_id, reason)
            return result
        finally:
            await conn.close()

    if run_async(revoke).endswith(" 0"):
        raise click.ClickException(f"no active licence {license_id}")
    click.echo(f"revoked {license_id}")


COMMANDS = [license_group]
