"""Licence commands: issue, list, show, revoke.

Licences are verified offline by the receiver (signature, org, expiry, entitlement); the database is the
register of what was issued and the source of the revocation list the receivers refresh.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import click

from services.auditctl.running import run_async
from services.auditctl.settings import CliSettings
from shared.db.pool import connect
from shared.keys import Ed25519Signer, KeyMaterialError, load_signer
from shared.licensing import DEFAULT_ENTITLEMENTS, ISSUABLE_ENTITLEMENTS, License, issue_license

STATUSES = ("active", "expired", "revoked")


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


def license_status(row: asyncpg.Record | dict[str, Any], now: datetime) -> str:
    if row["revoked_at"] is not None:
        return "revoked"
    return "expired" if row["expires_at"] <= now else "active"


def _row_json(row: asyncpg.Record | dict[str, Any], now: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in dict(row).items()}
    out["entitlements"] = list(row["entitlements"])
    out["status"] = license_status(row, now)
    return out


async def fetch_licenses(dsn: str, *, org: str | None = None, license_id: str | None = None) -> list[asyncpg.Record]:
    conn = await connect(dsn)
    try:
        return list(await conn.fetch(
            "SELECT license_id, org_id, tenant_id, entitlements, issued_at, expires_at, key_id, revoked_at,"
            " revoked_reason FROM licenses"
            " WHERE ($1::text IS NULL OR org_id = $1) AND ($2::text IS NULL OR license_id = $2)"
            " ORDER BY issued_at, license_id", org, license_id))
    finally:
        await conn.close()


async def revoke_license(dsn: str, license_id: str, reason: str) -> str:
    """'revoked', 'already revoked' or 'unknown'."""
    conn = await connect(dsn)
    try:
        result: str = await conn.execute(
            "UPDATE licenses SET revoked_at = now(), revoked_reason = $2 WHERE license_id = $1 AND revoked_at IS NULL",
            license_id, reason)
        if not result.endswith(" 0"):
            return "revoked"
        exists = await conn.fetchval("SELECT count(*) FROM licenses WHERE license_id = $1", license_id)
        return "already revoked" if exists else "unknown"
    finally:
        await conn.close()


def _issuer(settings: CliSettings) -> Ed25519Signer:
    try:
        return load_signer(file=settings.license_issuer_key_file, env_var="AUDIT_LICENSE_ISSUER_KEY")
    except KeyMaterialError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("license")
def license_group() -> None:
    """Licences: issue, list, show, revoke."""


@license_group.command("issue")
@click.option("--org", required=True, help="Organisation id; also the HTTP Basic user name.")
@click.option("--tenant", default=None, help="Tenant id every batch is filed under (defaults to the org id).")
@click.option("--days", default=365, show_default=True, type=click.IntRange(min=1), help="Validity in days.")
@click.option(
    "--entitlement", "entitlements", multiple=True, type=click.Choice(sorted(ISSUABLE_ENTITLEMENTS)),
    help=f"Entitlement, repeatable (default: {', '.join(DEFAULT_ENTITLEMENTS)}). "
    "otel_ingest (the Enterprise capability) is what the receiver requires; licences never read reports "
    "(use `auditctl token issue`).",
)
@click.pass_obj
def license_issue(settings: CliSettings, org: str, tenant: str | None, days: int,
                  entitlements: tuple[str, ...]) -> None:
    """Issue a licence; the key is printed as the last line of standard output."""
    try:
        lic, token = issue_license(_issuer(settings), org_id=org, tenant_id=tenant,
                                   entitlements=entitlements or DEFAULT_ENTITLEMENTS, valid_for=timedelta(days=days))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    run_async(lambda: store_license(settings.database_url, lic))
    click.echo(f"licence {lic.license_id} for org {lic.org_id} (tenant {lic.tenant_id}), entitlements "
               f"{', '.join(sorted(lic.entitlements))}, expires {lic.expires_at.isoformat()}", err=True)
    click.echo(token)


@license_group.command("list")
@click.option("--org", default=None, help="Only this organisation.")
@click.option("--status", "status", type=click.Choice(STATUSES), default=None, help="Only licences in this state.")
@click.pass_obj
def license_list(settings: CliSettings, org: str | None, status: str | None) -> None:
    """List licences as JSON lines (keys are never stored, so never shown)."""
    now = datetime.now(UTC)
    for row in run_async(lambda: fetch_licenses(settings.database_url, org=org)):
        if status is None or license_status(row, now) == status:
            click.echo(json.dumps(_row_json(row, now)))


@license_group.command("show")
@click.argument("license_id")
@click.pass_obj
def license_show(settings: CliSettings, license_id: str) -> None:
    """Show one licence as JSON."""
    rows = run_async(lambda: fetch_licenses(settings.database_url, license_id=license_id))
    if not rows:
        raise click.ClickException(f"no licence {license_id}")
    click.echo(json.dumps(_row_json(rows[0], datetime.now(UTC)), indent=2))


@license_group.command("revoke")
@click.argument("license_id")
@click.option("--reason", default="revoked by operator", show_default=True, help="Why; kept with the licence.")
@click.pass_obj
def license_revoke(settings: CliSettings, license_id: str, reason: str) -> None:
    """Revoke a licence; receivers refuse it (403) from their next revocation refresh."""
    outcome = run_async(lambda: revoke_license(settings.database_url, license_id, reason))
    if outcome == "unknown":
        raise click.ClickException(f"no licence {license_id}")
    if outcome == "already revoked":
        raise click.ClickException(f"licence {license_id} is already revoked")
    click.echo(f"revoked {license_id}")


COMMANDS = [license_group]
