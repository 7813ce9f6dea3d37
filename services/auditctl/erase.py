"""``auditctl erase``: erase the content of signed rows (hash version 2) without breaking their chain.

Order matters, so that content never goes missing without its signed record:
1. the rows are chosen (by event id, or by user, session or time range within a tenant);
2. one erasure event per tenant (per ``MAX_ROWS_PER_EVENT`` rows) is produced to the canonical topic, as
   any stage produces canonical events, and the signer chains and signs it;
3. once every erasure event is in its chain, the content and salt of the listed rows are deleted (the
   digest stays in the signed row), with the reason the reporter shows in their place, in one transaction.

An interrupted erase is finished by running it again: rows already erased are skipped.
"""

from __future__ import annotations

import asyncio
import getpass
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import click

from services.auditctl.running import run_async
from services.auditctl.settings import CliSettings
from shared.canonical import CanonicalEvent
from shared.chain import HASH_VERSION_ERASABLE
from shared.db.pool import connect
from shared.erasure import ROWS_KEY, ErasedRow, ErasureRequest, erasure_events
from shared.kafka import make_producer
from shared.messages import canonical_event
from shared.messages.auth import load_signing_key

_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Selector:
    """Which rows: ``event_ids`` (any tenant), or ``tenant`` with a user, a session and/or a time range."""

    event_ids: Sequence[str] = ()
    tenant: str | None = None
    user: str | None = None
    session: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def describe(self) -> dict[str, str]:
        described = {
            "event_ids": ",".join(self.event_ids) if self.event_ids else None,
            "tenant": self.tenant,
            "user": self.user,
            "session": self.session,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }
        return {key: value for key, value in described.items() if value is not None}

    def check(self) -> None:
        if self.event_ids and (self.user or self.session or self.since or self.until):
            raise ValueError("give --event alone, or --tenant with --user, --session, --since or --until")
        if not self.event_ids:
            if not (self.user or self.session or self.since or self.until):
                raise ValueError("nothing selected: give --event, or --tenant with --user, --session or a time range")
            if self.tenant is None:
                raise ValueError("--user, --session and a time range need --tenant")


@dataclass
class Selection:
    """The rows found, per tenant, and those that cannot or need not be erased."""

    erasable: dict[tuple[str, str], list[ErasedRow]] = field(default_factory=dict)  # (tenant, org) -> rows
    version_1: int = 0
    already_erased: int = 0
    without_content: int = 0

    @property
    def rows(self) -> int:
        return sum(len(rows) for rows in self.erasable.values())


_SELECT = (
    "SELECT a.tenant_id, a.org_id, a.chain_seq, a.event_id, a.hash_version,"
    " c.chain_seq IS NOT NULL AS has_content, coalesce(c.content <> '{}'::jsonb, false) AS holds_content"
    " FROM audit_logs a LEFT JOIN audit_content c ON c.tenant_id = a.tenant_id AND c.chain_seq = a.chain_seq"
    " WHERE (cardinality($1::text[]) = 0 OR a.event_id = ANY($1::text[]))"
    " AND ($2::text IS NULL OR a.tenant_id = $2)"
    " AND ($3::text IS NULL OR a.user_id = $3 OR a.user_email = $3)"
    " AND ($4::text IS NULL OR a.session_id = $4)"
    " AND ($5::timestamptz IS NULL OR a.event_time >= $5)"
    " AND ($6::timestamptz IS NULL OR a.event_time < $6)"
    # Tenants (their erasure events, as printed) in the database's collation, as before tenant ids compared as
    # bytes (migration 1000).
    ' ORDER BY a.tenant_id COLLATE "default", a.chain_seq'
)


async def select_rows(conn: asyncpg.Connection, selector: Selector) -> Selection:
    selector.check()
    found = Selection()
    for row in await conn.fetch(_SELECT, list(selector.event_ids), selector.tenant, selector.user,
                                selector.session, selector.since, selector.until):
        if row["hash_version"] != HASH_VERSION_ERASABLE:
            found.version_1 += 1
        elif not row["has_content"]:
            found.already_erased += 1
        elif not row["holds_content"]:
            found.without_content += 1
        else:
            key = (row["tenant_id"], row["org_id"])
            found.erasable.setdefault(key, []).append(ErasedRow(row["chain_seq"], row["event_id"]))
    return found


class NotChained(Exception):
    """The erasure events were produced but the signer did not chain them in time: nothing was deleted."""


async def wait_until_chained(conn: asyncpg.Connection, event_ids: Sequence[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        chained = await conn.fetchval(
            "SELECT count(*) FROM audit_logs WHERE event_id = ANY($1::text[])", list(event_ids)
        )
        if chained == len(event_ids):
            return
        if time.monotonic() >= deadline:
            raise NotChained(f"{chained} of {len(event_ids)} erasure events are chained after {timeout:g}s")
        await asyncio.sleep(_POLL_SECONDS)


async def delete_content(conn: asyncpg.Connection, events: Sequence[CanonicalEvent], reason: str, by: str) -> int:
    """Deletes the content and salt of every row the (chained) ``events`` list; the reporter's note with it."""
    deleted = 0
    async with conn.transaction():
        for event in events:
            seqs = list(event.attributes[ROWS_KEY])
            result = await conn.execute(
                "DELETE FROM audit_content WHERE tenant_id = $1 AND chain_seq = ANY($2::bigint[])",
                event.tenant_id, seqs,
            )
            deleted += int(result.split()[-1])
            await conn.execute(
                "INSERT INTO content_erasures (tenant_id, chain_seq, erasure_event_id, erased_at, erased_by, reason)"
                " SELECT $1, s, $3, $4, $5, $6 FROM unnest($2::bigint[]) s ON CONFLICT DO NOTHING",
                event.tenant_id, seqs, event.event_id, event.event_time, by, reason,
            )
    return deleted


@dataclass(frozen=True)
class EraseOutcome:
    selection: Selection
    events: tuple[CanonicalEvent, ...]
    deleted: int


async def erase(
    settings: CliSettings, selector: Selector, reason: str, by: str, *, wait_seconds: float, dry_run: bool = False
) -> EraseOutcome:
    conn = await connect(settings.database_url)
    try:
        selection = await select_rows(conn, selector)
        if dry_run or not selection.erasable:
            return EraseOutcome(selection, (), 0)
        now = datetime.now(UTC)
        request_id = str(uuid.uuid4())
        events: list[CanonicalEvent] = []
        for (tenant, org), rows in selection.erasable.items():
            request = ErasureRequest(tenant, org, by, reason, selector.describe(), request_id)
            events.extend(erasure_events(request, rows, now))
        await produce(settings, events)
        await wait_until_chained(conn, [event.event_id for event in events], wait_seconds)
        deleted = await delete_content(conn, events, reason, by)
        return EraseOutcome(selection, tuple(events), deleted)
    finally:
        await conn.close()


async def produce(settings: CliSettings, events: Sequence[CanonicalEvent]) -> None:
    """Sends the erasure events to the canonical topic and waits for the broker's acknowledgement of each."""
    # auditctl's own key: the signers accept only events whose producer holds a key in their keyring.
    auth = load_signing_key(settings.auditctl_events_auth_key_file, "AUDITCTL_EVENTS_AUTH_KEY_FILE")
    producer = make_producer(settings.kafka_connection(), settings.kafka_max_message_bytes, linger_ms=0)
    await producer.start()
    try:
        for event in events:
            key, value, headers = canonical_event.encode(event, auth)
            await (await producer.send(settings.topic_canonical, value, key=key, headers=headers))
    finally:
        await producer.stop()


def _timestamp(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 timestamp: {value!r}", param_hint=name) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment nor in the password database
        raise click.UsageError("cannot tell who is erasing: give --by") from None


def _summary(selection: Selection) -> Mapping[str, int]:
    return {"erasable": selection.rows, "already_erased": selection.already_erased,
            "without_content": selection.without_content, "hash_version_1": selection.version_1}


@click.command("erase")
@click.option("--event", "event_ids", multiple=True, help="Event id of a row to erase (repeatable).")
@click.option("--tenant", default=None, help="Tenant whose rows --user, --session or the time range select.")
@click.option("--user", default=None, help="Rows of this user (user id or e-mail).")
@click.option("--session", default=None, help="Rows of this session.")
@click.option("--since", default=None, help="Rows whose event time is at or after this (ISO 8601; UTC if no offset).")
@click.option("--until", default=None, help="Rows whose event time is before this (ISO 8601; UTC if no offset).")
@click.option("--reason", required=True, help="Why (kept in the signed erasure event, shown where content was).")
@click.option("--by", default=None, help="Who erases (default: the login name running auditctl).")
@click.option("--wait", "wait_seconds", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the signer to chain the erasure events before deleting.")
@click.option("--dry-run", is_flag=True, help="Only count the rows that would be erased.")
@click.pass_obj
def erase_command(
    settings: CliSettings, event_ids: tuple[str, ...], tenant: str | None, user: str | None, session: str | None,
    since: str | None, until: str | None, reason: str, by: str | None, wait_seconds: float, dry_run: bool,
) -> None:
    """Erase the content of signed rows (hash version 2), keeping the chain verifiable.

    A signed `erasure` event (who, when, why, which rows) is appended to each tenant's chain first; the
    content and salt are deleted only once it is chained. The rows' digests stay, so `verify` still passes
    and counts erased rows."""
    if not reason.strip():
        raise click.BadParameter("give a reason", param_hint="--reason")
    selector = Selector(tuple(event_ids), tenant, user, session, _timestamp(since, "--since"),
                        _timestamp(until, "--until"))
    try:
        selector.check()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    operator = by or _login_name()
    try:
        outcome = run_async(lambda: erase(settings, selector, reason, operator, wait_seconds=wait_seconds,
                                          dry_run=dry_run))
    except NotChained as exc:
        raise click.ClickException(f"{exc}; no content was deleted. Run the same erase again once the signer "
                                   "is running") from None
    counts = " ".join(f"{k}={v}" for k, v in _summary(outcome.selection).items())
    if dry_run:
        click.echo(f"DRY RUN {counts}")
        return
    for event in outcome.events:
        listed = len(event.attributes[ROWS_KEY])
        click.echo(f"erasure event {event.event_id} tenant={event.tenant_id} rows={listed}")
    click.echo(f"ERASED rows={outcome.deleted} {counts}")


COMMANDS = [erase_command]
