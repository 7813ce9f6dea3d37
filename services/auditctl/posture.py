"""Detection posture commands: which PII categories a tenant detects, and the action policy records."""

from __future__ import annotations

import json

import click

from services.auditctl.running import run_async
from services.auditctl.settings import CliSettings
from shared.db.pool import connect

ACTIONS = ("block", "redact", "warn", "log")


@click.group()
def posture() -> None:
    """Per-tenant PII detection posture (this collector masks every detected entity whatever the action)."""


@posture.command("set")
@click.option("--tenant", required=True)
@click.option(
    "--category",
    "categories",
    multiple=True,
    metavar="KIND=ACTION",
    help=f"A category that is on, with its action ({', '.join(ACTIONS)}); repeatable. Categories: EMAIL, PHONE,"
    " CARD, IBAN, US_SSN, IP_ADDRESS, ID_NIK, ID_NPWP, SECRET, PERSON (ID_NIK and ID_NPWP are always on).",
)
@click.option(
    "--detection/--no-detection",
    default=True,
    show_default=True,
    help="With --no-detection every content field of the tenant is withheld.",
)
@click.pass_obj
def posture_set(settings: CliSettings, tenant: str, categories: tuple[str, ...], detection: bool) -> None:
    """Replace a tenant's posture."""
    parsed: dict[str, str] = {}
    for item in categories:
        kind, sep, action = item.partition("=")
        if not sep or action not in ACTIONS:
            raise click.BadParameter(f"{item!r}: expected KIND=ACTION with ACTION one of {ACTIONS}")
        parsed[kind.strip().upper()] = action
    from shared.pii.engine import ALL_KINDS  # noqa: PLC0415 - loads the recognizers, only for this command

    unknown = sorted(set(parsed) - ALL_KINDS)
    if unknown:
        raise click.BadParameter(f"unknown categories {unknown}; known: {sorted(ALL_KINDS)}")

    async def store() -> None:
        conn = await connect(settings.database_url)
        try:
            await conn.execute(
                "INSERT INTO detection_postures (tenant_id, detection_enabled, categories) VALUES ($1, $2, $3)"
                " ON CONFLICT (tenant_id) DO UPDATE SET detection_enabled = EXCLUDED.detection_enabled,"
                " categories = EXCLUDED.categories, updated_at = now()",
                tenant,
                detection,
                parsed,
            )
        finally:
            await conn.close()

    run_async(store)
    click.echo(f"posture of {tenant}: detection {'on' if detection else 'off'}, {json.dumps(parsed)}")


@posture.command("show")
@click.pass_obj
def posture_show(settings: CliSettings) -> None:
    """Print every stored posture as JSON lines."""

    async def fetch() -> list[dict[str, object]]:
        conn = await connect(settings.database_url)
        try:
            rows = await conn.fetch("SELECT tenant_id, detection_enabled, categories FROM detection_postures")
        finally:
            await conn.close()
        return [dict(row) for row in rows]

    for row in run_async(fetch):
        click.echo(json.dumps(row))


COMMANDS = [posture]
