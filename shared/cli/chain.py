"""Chain commands for auditors and operators: verify, and the published signing keys."""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import click

from shared.cli import run_async
from shared.cli.settings import CliSettings
from shared.db.pool import connect
from shared.verify import published_keys, tenants, verify_tenant


@click.command()
@click.option("--tenant", default=None, help="Verify one tenant's chain (default: all).")
@click.pass_obj
def verify(settings: CliSettings, tenant: str | None) -> None:
    """Recompute every chain and check every signature; exit 1 on the first break."""

    async def check() -> bool:
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

    if not run_async(check):
        sys.exit(1)


@click.group("signing-keys")
def signing_keys() -> None:
    """The published chain-signing public keys."""


@signing_keys.command("export")
@click.pass_obj
def signing_keys_export(settings: CliSettings) -> None:
    """Print the published public keys, with validity windows, as JSON lines."""

    async def fetch() -> list[dict[str, Any]]:
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

    for entry in run_async(fetch):
        click.echo(json.dumps(entry))


COMMANDS = [verify, signing_keys]
