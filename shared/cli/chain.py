"""Chain commands for auditors and operators: verify, checkpoints, and the published signing keys."""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from shared.cli import run_async
from shared.cli.settings import CliSettings
from shared.db.pool import connect
from shared.verify import (
    Checkpoint,
    key_book_from_export,
    load_key_book,
    stored_checkpoints,
    tenants,
    verify_tenants,
)


def _progress(tenant: str, done: int, total: int, elapsed: float) -> None:
    rate = done / elapsed if elapsed > 0 else 0.0
    click.echo(f"  {tenant}: {done}/{total} rows ({rate:,.0f} rows/s)", err=True)


@click.command()
@click.option("--tenant", default=None, help="Verify one tenant's chain (default: all).")
@click.option(
    "--checkpoints",
    "checkpoint_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A saved `auditctl checkpoints export` file; detects truncation and rollback.",
)
@click.option(
    "--keys",
    "keys_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A saved `auditctl signing-keys export` file, used instead of the keys in the database.",
)
@click.option("--workers", type=int, default=None, help="Processes checking signatures (default: one per core).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.pass_obj
def verify(
    settings: CliSettings,
    tenant: str | None,
    checkpoint_file: str | None,
    keys_file: str | None,
    workers: int | None,
    quiet: bool,
) -> None:
    """Recompute every chain and check every signature; exit 1 and name the first break if one is found."""
    saved = (
        [Checkpoint.from_json(line) for line in Path(checkpoint_file).read_text().splitlines() if line.strip()]
        if checkpoint_file
        else []
    )

    saved_keys = key_book_from_export(Path(keys_file).read_text().splitlines()) if keys_file else None

    async def check() -> bool:
        conn = await connect(settings.database_url)
        try:
            book = saved_keys or await load_key_book(conn)
            names = [tenant] if tenant else sorted(set(await tenants(conn)) | {c.tenant_id for c in saved})
            all_ok = True
            reports = await verify_tenants(
                conn,
                names,
                book,
                dsn=settings.database_url,
                checkpoints=saved,
                workers=workers,
                progress=None if quiet else _progress,
            )
            for report in reports:
                name = report.tenant_id
                if report.ok:
                    click.echo(
                        f"OK tenant={name} rows={report.rows} head={report.head_seq} "
                        f"checkpoints={report.checkpoints_checked}"
                    )
                else:
                    all_ok = False
                    first = report.breaks[0]
                    click.echo(f"BROKEN tenant={name} seq={first.chain_seq} kind={first.kind}: {first.detail}")
            return all_ok
        finally:
            await conn.close()

    if not run_async(check):
        sys.exit(1)


@click.group("checkpoints")
def checkpoints() -> None:
    """Signed chain checkpoints."""


@checkpoints.command("export")
@click.option("--tenant", default=None, help="Only this tenant.")
@click.pass_obj
def checkpoints_export(settings: CliSettings, tenant: str | None) -> None:
    """Print every signed checkpoint as a JSON line, for an auditor to keep outside the database."""

    async def fetch() -> list[Checkpoint]:
        conn = await connect(settings.database_url)
        try:
            return await stored_checkpoints(conn, tenant)
        finally:
            await conn.close()

    for cp in run_async(fetch):
        click.echo(cp.to_json())


@click.group("signing-keys")
def signing_keys() -> None:
    """The published chain-signing public keys."""


@signing_keys.command("export")
@click.pass_obj
def signing_keys_export(settings: CliSettings) -> None:
    """Print the published public keys, their validity windows and per-chain activations, as JSON lines."""

    async def fetch() -> list[dict[str, Any]]:
        conn = await connect(settings.database_url)
        try:
            rows = await conn.fetch("SELECT * FROM signing_keys ORDER BY valid_from, key_id")
            activations = await conn.fetch("SELECT tenant_id, from_seq, key_id FROM key_activations ORDER BY 1, 2")
        finally:
            await conn.close()
        return [
            {
                "key_id": r["key_id"],
                "algorithm": r["algorithm"],
                "public_key": base64.b64encode(bytes(r["public_key"])).decode(),
                "valid_from": r["valid_from"].isoformat(),
                "valid_until": r["valid_until"].isoformat() if r["valid_until"] else None,
                "activations": [
                    {"tenant_id": a["tenant_id"], "from_seq": a["from_seq"]}
                    for a in activations
                    if a["key_id"] == r["key_id"]
                ],
            }
            for r in rows
        ]

    for entry in run_async(fetch):
        click.echo(json.dumps(entry))


@signing_keys.command("retire")
@click.argument("key_id")
@click.pass_obj
def signing_keys_retire(settings: CliSettings, key_id: str) -> None:
    """Close a key's validity window after a rotation; rows it signed stay verifiable."""

    async def retire() -> str:
        conn = await connect(settings.database_url)
        try:
            result: str = await conn.execute(
                "UPDATE signing_keys SET valid_until = $2 WHERE key_id = $1 AND valid_until IS NULL",
                key_id,
                datetime.now(UTC),
            )
            return result
        finally:
            await conn.close()

    if run_async(retire).endswith(" 0"):
        raise click.ClickException(f"no open key {key_id}")
    click.echo(f"retired {key_id}")


COMMANDS = [verify, checkpoints, signing_keys]
