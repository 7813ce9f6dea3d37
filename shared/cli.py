"""``auditctl``: operator commands for licences, keys, topics, migrations and verification."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import Field

from shared.db.migrate import apply_migrations
from shared.db.pool import connect
from shared.kafka import TopicSpec, ensure_topics
from shared.keys import Ed25519Signer, KeyMaterialError, load_signer, write_new_key
from shared.licensing import DEFAULT_ENTITLEMENTS, License, issue_license
from shared.settings import CommonSettings, load_settings
from shared.verify import published_keys, tenants, verify_tenant

T = TypeVar("T")


class CliSettings(CommonSettings):
    license_issuer_key_file: str = Field(
        default="var/keys/license-issuer.key", description="Private key that signs licences (auditctl only)."
    )
    license_public_keys_file: str = Field(default="var/keys/license-issuer.pub",
                                          description="Public licence keys the receiver accepts.")
    signing_key_file: str | None = Field(default="var/keys/signing.key",
                                         description="Private key the signer uses for chain rows.")
    partitions_raw: int = Field(default=6, ge=1, description="Partitions of the raw topics.")
    partitions_canonical: int = Field(default=6, ge=1, description="Partitions of the canonical topic.")
    partitions_dead_letter: int = Field(default=1, ge=1, description="Partitions of the dead-letter topic.")
    topic_replication_factor: int = Field(default=1, ge=1, description="Replication factor for new topics.")


def _run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coro_factory())  # type: ignore[arg-type]


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Operate the audit ingest pipeline."""
    ctx.obj = load_settings(CliSettings)


@main.command()
@click.pass_obj
def migrate(settings: CliSettings) -> None:
    """Apply pending database migrations."""

    async def go() -> list[str]:
        conn = await connect(settings.database_url)
        try:
            return await apply_migrations(conn)
        finally:
            await conn.close()

    applied = _run(go)
    click.echo(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))


@main.group()
def topics() -> None:
    """Kafka topics."""


@topics.command("create")
@click.pass_obj
def topics_create(settings: CliSettings) -> None:
    """Create the raw, canonical and dead-letter topics if they are missing."""
    created = _run(lambda: ensure_topics(settings.kafka_bootstrap_servers, topic_specs(settings)))
    click.echo(f"created {len(created)} topic(s)" + (f": {', '.join(created)}" if created else ""))


@main.group()
def keys() -> None:
    """Signing and licence-issuer keys."""


def ensure_key_files(settings: CliSettings) -> list[str]:
    """Create the key files that do not exist yet (never overwrites); returns what was created."""
    created = []
    issuer_path = Path(settings.license_issuer_key_file)
    if not issuer_path.exists():
        write_new_key(issuer_path)
        created.append(str(issuer_path))
    issuer = load_signer(file=str(issuer_path))
    public_path = Path(settings.license_public_keys_file)
    encoded = base64.b64encode(issuer.public_key).decode()
    if not public_path.exists() or encoded not in public_path.read_text():
        with public_path.open("a") as handle:
            handle.write(encoded + "\n")
    if settings.signing_key_file and not Path(settings.signing_key_file).exists():
        write_new_key(Path(settings.signing_key_file))
        created.append(settings.signing_key_file)
    return created


def topic_specs(settings: CliSettings) -> list[TopicSpec]:
    rf = settings.topic_replication_factor
    return [
        TopicSpec(settings.topic_raw_logs, settings.partitions_raw, rf),
        TopicSpec(settings.topic_raw_metrics, settings.partitions_raw, rf),
        TopicSpec(settings.topic_canonical, settings.partitions_canonical, rf),
        TopicSpec(settings.topic_dead_letter, settings.partitions_dead_letter, rf),
    ]


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


@keys.command("init")
@click.pass_obj
def keys_init(settings: CliSettings) -> None:
    """Create the development key files that do not exist yet (never overwrites)."""
    for path in ensure_key_files(settings):
        click.echo(f"created {path}")


@keys.command("export")
@click.pass_obj
def keys_export(settings: CliSettings) -> None:
    """Print the published chain-signing public keys, with validity windows, as JSON lines."""

    async def go() -> list[dict[str, Any]]:
        conn = await connect(settings.database_url)
        try:
            rows = await conn.fetch("SELECT * FROM signing_keys ORDER BY valid_from, key_id")
        finally:
            await conn.close()
        return [
            {
                "key_id": r["key_id"],
                "algorithm": r["algorithm"],
                "public_key": base64.b64encode(bytes(r["public_key"])).decode(),
                "valid_from": r["valid_from"].isoformat(),
                "valid_until": r["valid_until"].isoformat() if r["valid_until"] else None,
            }
            for r in rows
        ]

    for entry in _run(go):
        click.echo(json.dumps(entry))


@main.group()
def license() -> None:
    """Licences: issue, list, revoke."""


def _issuer(settings: CliSettings) -> Ed25519Signer:
    try:
        return load_signer(file=settings.license_issuer_key_file, env_var="AUDIT_LICENSE_ISSUER_KEY")
    except KeyMaterialError as exc:
        raise click.ClickException(str(exc)) from None


@license.command("issue")
@click.option("--org", required=True, help="Organisation id; also the Basic auth user name.")
@click.option("--tenant", default=None, help="Tenant id (defaults to the org id).")
@click.option("--days", default=365, show_default=True, type=int, help="Validity in days.")
@click.option("--entitlement", "entitlements", multiple=True, help="Entitlement (repeatable).")
@click.pass_obj
def license_issue(settings: CliSettings, org: str, tenant: str | None, days: int,
                  entitlements: tuple[str, ...]) -> None:
    """Issue a licence; the key is printed as the last line."""
    issuer = _issuer(settings)
    lic, token = issue_license(issuer, org_id=org, tenant_id=tenant,
                               entitlements=entitlements or DEFAULT_ENTITLEMENTS, valid_for=timedelta(days=days))
    _run(lambda: store_license(settings.database_url, lic))
    click.echo(f"licence {lic.license_id} for org {lic.org_id} (tenant {lic.tenant_id}), "
               f"expires {lic.expires_at.date().isoformat()}", err=True)
    click.echo(token)


@license.command("list")
@click.option("--org", default=None, help="Only this organisation.")
@click.pass_obj
def license_list(settings: CliSettings, org: str | None) -> None:
    """List licences as JSON lines."""

    async def go() -> list[Any]:
        conn = await connect(settings.database_url)
        try:
            return list(await conn.fetch(
                "SELECT * FROM licenses WHERE $1::text IS NULL OR org_id = $1 ORDER BY issued_at", org))
        finally:
            await conn.close()

    for row in _run(go):
        click.echo(json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in dict(row).items()}))


@license.command("revoke")
@click.argument("license_id")
@click.option("--reason", default="revoked by operator", help="Why; kept with the licence.")
@click.pass_obj
def license_revoke(settings: CliSettings, license_id: str, reason: str) -> None:
    """Revoke a licence; receivers refuse it at their next revocation refresh."""

    async def go() -> str:
        conn = await connect(settings.database_url)
        try:
            result: str = await conn.execute(
                "UPDATE licenses SET revoked_at = now(), revoked_reason = $2"
                " WHERE license_id = $1 AND revoked_at IS NULL", license_id, reason)
            return result
        finally:
            await conn.close()

    if _run(go).endswith(" 0"):
        raise click.ClickException(f"no active licence {license_id}")
    click.echo(f"revoked {license_id}")


@main.command()
@click.option("--tenant", default=None, help="Verify one tenant's chain (default: all).")
@click.pass_obj
def verify(settings: CliSettings, tenant: str | None) -> None:
    """Recompute every chain and check every signature; exit 1 on the first break."""

    async def go() -> bool:
        conn = await connect(settings.database_url)
        try:
            keys = await published_keys(conn)
            all_ok = True
            for name in [tenant] if tenant else await tenants(conn):
                report = await verify_tenant(conn, name, keys)
                if report.ok:
                    click.echo(f"OK tenant={name} rows={report.rows} head={report.head_seq}")
                else:
                    all_ok = False
                    first = report.breaks[0]
                    click.echo(f"BROKEN tenant={name} seq={first.chain_seq} kind={first.kind}: {first.detail}")
            return all_ok
        finally:
            await conn.close()

    if not _run(go):
        sys.exit(1)


if __name__ == "__main__":
    main()
