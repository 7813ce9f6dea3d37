"""Commands that prepare an installation: schema, topics and key files."""

from __future__ import annotations

import base64
from pathlib import Path

import click

from services.auditctl.running import run_async
from services.auditctl.settings import CliSettings
from shared.db.migrate import apply_migrations
from shared.db.pool import connect
from shared.db.roles import COMPONENT_ROLES
from shared.kafka import TopicSpec, ensure_topics
from shared.keys import load_signer, write_new_key
from shared.messages.auth import AUDITCTL_SCOPE, REDACTOR_SCOPE, REPORTER_SCOPE, ensure_message_keys


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
        [(Path(settings.canonical_auth_key_file), "redactor", REDACTOR_SCOPE),
         (Path(settings.reporter_access_auth_key_file), "reporter", REPORTER_SCOPE),
         (Path(settings.auditctl_events_auth_key_file), "auditctl", AUDITCTL_SCOPE)],
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


def role_passwords(folder: str | None) -> dict[str, str]:
    """The passwords in ``folder``: one file per component role, named after it (a mounted Secret)."""
    if not folder:
        return {}
    passwords = {}
    for role in COMPONENT_ROLES:
        path = Path(folder) / role
        if path.is_file():
            password = path.read_text().strip()
            if not password:
                raise click.UsageError(f"{path} is empty")
            passwords[role] = password
    return passwords


async def migrate_database(dsn: str, passwords: dict[str, str] | None = None) -> list[str]:
    """Migrations and privileges; then the component roles' passwords, where given."""
    conn = await connect(dsn)
    try:
        applied = await apply_migrations(conn)
        for role, password in sorted((passwords or {}).items()):
            # ALTER ROLE takes no bind parameters: quote on the server, never in Python.
            statement = await conn.fetchval("SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
                                            role, password)
            await conn.execute(statement)
        return applied
    finally:
        await conn.close()


@click.command()
@click.pass_obj
def migrate(settings: CliSettings) -> None:
    """Apply pending database migrations and the component roles' privileges (run it as the owner).

    With DB_ROLE_PASSWORDS_DIR, also sets the password of each component role that has a file there.
    """
    passwords = role_passwords(settings.db_role_passwords_dir)
    applied = run_async(lambda: migrate_database(settings.database_url, passwords))
    click.echo(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    if passwords:
        click.echo(f"set the password of {', '.join(sorted(passwords))}")


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
