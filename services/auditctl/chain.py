"""Chain commands for auditors and operators: verify, checkpoints, and the published signing keys."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from services.auditctl.running import run_async
from services.auditctl.settings import CliSettings
from shared.chain import format_timestamp
from shared.db.pool import connect
from shared.enrollment import enroll, pinned_keys
from shared.keys import KeyMaterialError, load_signer
from shared.verify import (
    Checkpoint,
    KeyBook,
    key_book_from_export,
    load_key_book,
    stored_checkpoints,
    tenants,
    verify_tenants,
    witnessed_checkpoints,
)
from shared.witness import DirectoryWitness, S3Witness, Witness, WitnessError, witness_from_settings


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
@click.option("--no-witness", is_flag=True, help="Ignore the witness (checkpoints and pinned keys).")
@click.pass_obj
def verify(
    settings: CliSettings,
    tenant: str | None,
    checkpoint_file: str | None,
    keys_file: str | None,
    workers: int | None,
    quiet: bool,
    no_witness: bool,
) -> None:
    """Recompute every chain and check every signature; exit 1 and name the first break if one is found.

    By default the trust anchors outside the database are used: the checkpoints published to the witness and
    the keys pinned there (CHECKPOINT_WITNESS_DIR or CHECKPOINT_WITNESS_S3_BUCKET). The first line of output
    names the anchors used, or says that the database is trusted."""
    saved = (
        [Checkpoint.from_json(line) for line in Path(checkpoint_file).read_text().splitlines() if line.strip()]
        if checkpoint_file
        else []
    )
    saved_keys = key_book_from_export(Path(keys_file).read_text().splitlines()) if keys_file else None
    witness = None if no_witness else _configured_witness(settings)

    async def check() -> bool:
        witnessed: list[Checkpoint] = []
        pinned: dict[str, bytes] | None = None
        if witness is not None:
            try:
                witnessed = witnessed_checkpoints(await asyncio.to_thread(witness.checkpoint_records))
                pinned = await pinned_keys(witness) or None
            except (WitnessError, OSError, ValueError) as exc:
                raise click.ClickException(f"cannot read the {witness.description}: {exc}") from None
        click.echo(_anchors_line(witness, witnessed, pinned, checkpoint_file, keys_file))
        checkpoints_used = saved + witnessed
        conn = await connect(settings.database_url)
        try:
            book: KeyBook = saved_keys or await load_key_book(conn, pinned)
            names = [tenant] if tenant else sorted(set(await tenants(conn)) | {c.tenant_id for c in checkpoints_used})
            all_ok = True
            reports = await verify_tenants(
                conn,
                names,
                book,
                dsn=settings.database_url,
                checkpoints=checkpoints_used,
                workers=workers,
                progress=None if quiet else _progress,
            )
            for report in reports:
                name = report.tenant_id
                if report.ok:
                    click.echo(
                        f"OK tenant={name} rows={report.rows} head={report.head_seq} "
                        f"checkpoints={report.checkpoints_checked} erased={report.erased}"
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


def _configured_witness(settings: CliSettings) -> Witness | None:
    """The witness the settings name; a witness directory that does not exist is no witness."""
    witness = witness_from_settings(settings)
    if isinstance(witness, DirectoryWitness) and not witness.root.is_dir():
        return None
    return witness


def _anchors_line(
    witness: Witness | None,
    witnessed: list[Checkpoint],
    pinned: dict[str, bytes] | None,
    checkpoint_file: str | None,
    keys_file: str | None,
) -> str:
    checkpoints = []
    if witness is not None:
        checkpoints.append(f"{len(witnessed)} checkpoint(s) from the {witness.description}")
    if checkpoint_file:
        checkpoints.append(f"saved checkpoints {checkpoint_file}")
    if keys_file:
        keys = f"keys from the saved export {keys_file}"
    elif pinned is not None and witness is not None:
        keys = f"{len(pinned)} key(s) pinned in the {witness.description}"
    else:
        keys = ""
    if not checkpoints and not keys:
        return (
            "anchors: NONE - trusting the database itself for keys, heads and checkpoints"
            " (no witness: set CHECKPOINT_WITNESS_DIR or CHECKPOINT_WITNESS_S3_BUCKET)"
        )
    return "anchors: " + "; ".join(
        [
            " + ".join(checkpoints) if checkpoints else "no checkpoints outside the database",
            keys or "no pinned keys - trusting the keys in the database",
        ]
    )


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
            # Tenants in the database's collation, as listed before tenant ids compared as bytes (migration 1000).
            activations = await conn.fetch(
                "SELECT tenant_id, from_seq, key_id, created_at FROM key_activations"
                ' ORDER BY tenant_id COLLATE "default", from_seq'
            )
        finally:
            await conn.close()
        return [
            {
                "key_id": r["key_id"],
                "algorithm": r["algorithm"],
                "public_key": base64.b64encode(bytes(r["public_key"])).decode(),
                "valid_from": format_timestamp(r["valid_from"]),
                "valid_until": format_timestamp(r["valid_until"]) if r["valid_until"] else None,
                "activations": [
                    {"tenant_id": a["tenant_id"], "from_seq": a["from_seq"],
                     "created_at": format_timestamp(a["created_at"])}
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


@click.group("keys")
def keys() -> None:
    """Chain-signing keys an operator enrolled: the only ones a signer may sign with and verify trusts."""


@keys.command("enroll")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The signer's private key file (base64 seed); only its public key is used.")
@click.option("--public-key", "public_key_b64", default=None, help="The public key, base64 (32 bytes).")
@click.option("--note", default="", help="Free text kept with the pinned key (who, why).")
@click.pass_obj
def keys_enroll(settings: CliSettings, key_file: str | None, public_key_b64: str | None, note: str) -> None:
    """Pin a public key in the witness (trusted-keys) and record it in the database, so a signer may use it."""
    if (key_file is None) == (public_key_b64 is None):
        raise click.UsageError("give exactly one of --key-file and --public-key")
    try:
        public_key = (
            load_signer(file=key_file).public_key if key_file else base64.b64decode(public_key_b64 or "", validate=True)
        )
    except (KeyMaterialError, ValueError) as exc:
        raise click.ClickException(f"not a usable key: {exc}") from None
    witness = witness_from_settings(settings)

    async def run() -> str:
        conn = await connect(settings.database_url)
        try:
            if isinstance(witness, S3Witness):
                witness.check_object_lock()
            return await enroll(conn, witness, public_key, note)
        except (ValueError, WitnessError, OSError) as exc:
            raise click.ClickException(f"cannot enrol the key: {exc}") from None
        finally:
            await conn.close()

    key_id = run_async(run)
    where = f"pinned in the {witness.description}" if witness else "NOT pinned (no witness configured)"
    click.echo(f"enrolled {key_id}: recorded in the database, {where}")


COMMANDS = [verify, checkpoints, signing_keys, keys]
