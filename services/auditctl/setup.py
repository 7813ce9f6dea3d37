"""Commands that prepare an installation: schema, topics and key files."""

from __future__ import annotations

import base64
from pathlib import Path

import click

from services.auditctl.running import run_async
from services.auditctl.settings import CliSettings
from shared.db.migrate import apply_migrations
from shared.db.pool import connect
from shared.kafka import TopicSpec, ensure_topics
from shared.keys import load_signer, write_new_key
from shared.messages.auth import ensure_message_keys


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
    created += ensure_message_keys(
        Path(settings.raw_auth_key_file),
        [(Path(settings.canonical_auth_key_file), "redactor"),
         (Path(settings.reporter_access_auth_key_file), "reporter")],
        Path(settings.canonical_auth_keyring_file),
    )
    return created


def topic_specs(settings: CliSettings) -> list[TopicSpec]:
    rf = settings.topic_replication_factor
    return [
        TopicSpec(settings.topic_raw_logs, settings.partitions_raw, rf),
        TopicSpec(settings.topic_raw_metrics, settings.partitions_raw, rf),
        TopicSpec(settings.topic_canonical, settings.partitions_canonical, rf),
        TopicSpec(settings.topic_dead_letter, settings.partitions_dead_letter, rf),
        TopicSpec(settings.topic_dead_letter_requeued, 1, rf, (("cleanup.policy", "compact"),)),
    ]


async def migrate_database(dsn: str) -> list[str]:
    conn = await connect(dsn)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()


@click.command()
@click.pass_obj
def migrate(settings: CliSettings) -> None:
    """Apply pending database migrations."""
    applied = run_async(lambda: migrate_database(settings.database_url))
    click.echo(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))


@click.group()
def topics() -> None:
    """Kafka topics."""


@topics.command("create")
@click.pass_obj
def topics_create(settings: CliSettings) -> None:
    """Create the raw, canonical and dead-letter topics if they are missing."""
    created = run_async(lambda: ensure_topics(settings.kafka_connection(), topic_specs(settings)))
    click.echo(f"created {len(created)} topic(s)" + (f": {', '.join(created)}" if created else ""))


@click.command("init-keys")
@click.pass_obj
def init_keys(settings: CliSettings) -> None:
    """Create the key files that do not exist yet (never overwrites): licence issuer, signing key, and the
    message keys (raw batches; the redactors' and the reporter's canonical-event keys, added to the signers'
    keyring)."""
    for path in ensure_key_files(settings):
        click.echo(f"created {path}")


COMMANDS = [migrate, topics, init_keys]
