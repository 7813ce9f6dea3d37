"""Operator commands for incidents: ``replay`` a window of the raw topic, and the ``dlq`` group (list,
inspect, requeue, exporter). The logic lives in ``services/auditctl/ops``; this module parses, prints and exits."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg
import click
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from services.auditctl.ops.deadletter import (
    DeadLetter,
    DeadLetterRef,
    Selection,
    describe_payload,
    ensure_marker_topic,
    read_dead_letters,
    read_markers,
    requeue,
    select,
)
from services.auditctl.ops.produce import ProduceStep
from services.auditctl.ops.reader import TopicReader
from services.auditctl.ops.replay import Replayer, plan_replay
from services.auditctl.ops.settings import OpsSettings
from services.auditctl.ops.store import PostgresChainedIds
from services.auditctl.ops.window import TimeWindow, Window, parse_offset_ranges, parse_timestamp, resolve_window
from services.auditctl.running import run_async
from shared.db.pool import create_pool
from shared.kafka import KafkaConfigError, make_producer, refuse_misconfigured_client
from shared.logs import configure_logging
from shared.runtime import stop_on_signals
from shared.settings import load_settings

T = TypeVar("T")


def _settings() -> OpsSettings:
    settings = load_settings(OpsSettings)
    configure_logging("auditctl", "WARNING" if settings.log_level.upper() == "INFO" else settings.log_level)
    return settings


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    """Broker and database failures become one readable line and exit 1, not a traceback."""
    try:
        return run_async(factory)
    except KafkaError as exc:
        # aiokafka says "Unable to bootstrap" for an untrusted broker certificate too: name that case.
        try:
            run_async(lambda: refuse_misconfigured_client(_settings().kafka_connection()))
        except KafkaConfigError as config_error:
            raise click.ClickException(str(config_error)) from None
        raise click.ClickException(f"broker or database unavailable: {exc!r}") from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise click.ClickException(f"broker or database unavailable: {exc!r}") from None
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def _progress(total: int, label: str, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda _: None
        return
    with click.progressbar(length=max(total, 1), label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar.update


def _window(start: str | None, end: str | None, offsets: tuple[str, ...]) -> Window:
    if offsets and (start or end):
        raise click.UsageError("give either --from/--to or --offsets, not both")
    try:
        if offsets:
            return parse_offset_ranges(offsets)
        if not start:
            raise click.UsageError("give --from (and optionally --to), or --offsets")
        return TimeWindow(parse_timestamp(start), parse_timestamp(end) if end else None)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--from", "start", metavar="TIME", help="Window start: ISO 8601 (UTC if no zone) or epoch ms.")
@click.option("--to", "end", metavar="TIME", help="Window end, exclusive (default: now).")
@click.option("--offsets", multiple=True, metavar="P:START-END",
              help="Explicit range of one partition, END exclusive or empty for the current end; repeatable.")
@click.option("--tenant", default=None, help="Replay only this tenant's batches (default: every tenant).")
@click.option("--dry-run", is_flag=True, help="Print the plan (partitions, offsets, estimated records) only.")
@click.option("--wait", "wait_seconds", type=float, default=0.0, show_default=True,
              help="Then wait up to this long for every replayed event to be chained; exit 1 if some are not.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan and the summary as JSON lines.")
def replay(start: str | None, end: str | None, offsets: tuple[str, ...], tenant: str | None, dry_run: bool,
           wait_seconds: float, as_json: bool) -> None:
    """Re-process a window of the raw log topic through the redactor and signer.

    Raw batches are re-sent with their original headers plus replay.id/replay.source; batches whose events
    are all chained are not re-sent, and the signer skips any event chained meanwhile: a replay never
    duplicates a row or forks a chain, and can be run again.
    """
    settings = _settings()
    window = _window(start, end, offsets)
    raw_topic = settings.topic_raw_logs  # the redactor's input: the only topic a replay can feed

    async def go() -> int:
        async with TopicReader(settings.kafka_connection()) as reader:
            try:
                resolved = await resolve_window(reader, raw_topic, window)
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from None
            plan = await plan_replay(reader, resolved, tenant)
            if as_json:
                click.echo(json.dumps({"plan": plan.as_dict()}))
            else:
                for line in plan.describe():
                    click.echo(line)
            if dry_run:
                return 0
            from services.auditctl.ops.identify import RedactorEventIds  # noqa: PLC0415
            from shared.canonicalize.settings import MappingSettings  # noqa: PLC0415 - only a real replay needs it
            from shared.messages.auth import KeyFileError  # noqa: PLC0415

            try:
                identify = RedactorEventIds(load_settings(MappingSettings))
            except KeyFileError as exc:
                raise click.ClickException(f"replay needs the redactors' raw-batch keys: {exc}") from None
            pool = await create_pool(settings.database_url, min_size=1, max_size=2)
            producer = make_producer(settings.kafka_connection(), settings.kafka_max_message_bytes)
            await producer.start()
            try:
                replayer = Replayer(reader, ProduceStep(producer, settings.ops_producer_max_in_flight),
                                    PostgresChainedIds(pool), identify, raw_topic=raw_topic,
                                    dead_letter_topic=settings.topic_dead_letter,
                                    max_message_bytes=settings.kafka_max_message_bytes)
                with _progress(plan.messages, "replaying", enabled=not as_json) as progress:
                    summary = await replayer.run(plan, progress)
                if wait_seconds > 0 and summary.replayed_events:
                    summary = await replayer.wait_until_chained(wait_seconds)
            finally:
                await producer.stop()
                await pool.close()
        if as_json:
            click.echo(json.dumps({"summary": summary.as_dict()}))
        else:
            for line in summary.describe():
                click.echo(line)
        if summary.missing_event_ids:
            click.echo(f"not chained after {wait_seconds}s: {', '.join(summary.missing_event_ids[:10])}"
                       + (" ..." if len(summary.missing_event_ids) > 10 else ""))
            return 1
        return 0

    sys.exit(_run(go))


@click.group()
def dlq() -> None:
    """The dead-letter topic: list, inspect, requeue, and the depth exporter."""


def _selection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--stage", default=None,
                     help="Only dead letters of this stage (redactor, signer, usage, replay)."),
        click.option("--tenant", default=None, help="Only this tenant's dead letters."),
        click.option("--source-topic", default=None, help="Only those that failed on this topic."),
        click.option("--error-contains", default=None, help="Only those whose error contains this text."),
        click.option("--since", default=None, metavar="TIME", help="Only those that failed at or after TIME."),
    ]):
        command = option(command)
    return command


def _selection(refs: tuple[str, ...], stage: str | None, tenant: str | None, source_topic: str | None,
               error_contains: str | None, since: str | None) -> Selection:
    try:
        return Selection(frozenset(DeadLetterRef.parse(r) for r in refs), stage, tenant, source_topic,
                         error_contains, parse_timestamp(since) if since else None)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


async def _load(settings: OpsSettings) -> tuple[list[DeadLetter], dict[DeadLetterRef, Any]]:
    async with TopicReader(settings.kafka_connection()) as reader:
        letters = await read_dead_letters(reader, settings.topic_dead_letter)
        markers = await read_markers(reader, settings.topic_dead_letter_requeued)
    return letters, markers


@dlq.command("list")
@_selection_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter.")
def dlq_list(stage: str | None, tenant: str | None, source_topic: str | None, error_contains: str | None,
             since: str | None, as_json: bool) -> None:
    """List retained dead letters (newest last), with source, error and whether they were requeued."""
    settings = _settings()
    selection = _selection((), stage, tenant, source_topic, error_contains, since)
    letters, markers = _run(lambda: _load(settings))
    chosen = select(letters, selection)
    for letter in chosen:
        row = letter.summary(markers.get(letter.ref))
        if as_json:
            click.echo(json.dumps(row))
            continue
        requeued = f"requeued {row['requeued_at']}" if row["requeued_at"] else "not requeued"
        click.echo(f"{row['ref']:>8}  {row['failed_at'] or '?':32}  {row['stage']:8}  {row['source']}"
                   f"  tenant={row['tenant']}  records={row['records']}  {requeued}  {_one_line(row['error'], 100)}")
    if not as_json:
        pending = sum(1 for letter in chosen if letter.ref not in markers)
        click.echo(f"{len(chosen)} dead letter(s), {pending} not requeued")


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


@dlq.command("inspect")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def dlq_inspect(ref: str, as_json: bool) -> None:
    """Show one dead letter (PARTITION:OFFSET): decoded headers, the error and the payload's shape.

    The payload itself is never printed: only its size, SHA-256 and, for a batch, its record count and
    event names; for a canonical event its id and type.
    """
    settings = _settings()
    try:
        wanted = DeadLetterRef.parse(ref)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    letters, markers = _run(lambda: _load(settings))
    letter = next((d for d in letters if d.ref == wanted), None)
    if letter is None:
        raise click.ClickException(f"no dead letter at {wanted} (not written yet, or removed by retention)")
    marker = markers.get(wanted)
    report: dict[str, Any] = {
        "ref": str(letter.ref),
        "dead_letter": {
            "stage": letter.stage,
            "source": letter.source,
            "failed_at": letter.failed_at.isoformat() if letter.failed_at else None,
            "error": letter.error,
        },
        "original_headers": letter.original_headers,
        "payload": describe_payload(letter, raw_logs_topic=settings.topic_raw_logs,
                                    raw_metrics_topic=settings.topic_raw_metrics,
                                    canonical_topic=settings.topic_canonical),
        "requeued": None if marker is None else {"at": marker.requeued_at, "requeue_id": marker.requeue_id,
                                                 "target": marker.target},
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"dead letter {report['ref']} of {settings.topic_dead_letter}")
    for section in ("dead_letter", "original_headers", "payload"):
        click.echo(f"{section.replace('_', ' ')}:")
        for key, value in report[section].items():
            click.echo(f"  {key}: {value}")
    click.echo(f"requeued: {report['requeued'] or 'no'}")


@dlq.command("requeue")
@click.argument("refs", nargs=-1)
@click.option("--all", "select_all", is_flag=True, help="Every dead letter matching the filters.")
@_selection_options
@click.option("--dry-run", is_flag=True, help="Show what would be requeued.")
def dlq_requeue(refs: tuple[str, ...], select_all: bool, stage: str | None, tenant: str | None,
                source_topic: str | None, error_contains: str | None, since: str | None, dry_run: bool) -> None:
    """Send dead letters (PARTITION:OFFSET ..., or --all with filters) back to the topic they failed on.

    Each is requeued once: a marker records it, and the signer skips events already chained.
    """
    settings = _settings()
    if not refs and not select_all:
        raise click.UsageError("name dead letters as PARTITION:OFFSET, or pass --all (with filters)")
    if refs and select_all:
        raise click.UsageError("give PARTITION:OFFSET references or --all, not both")
    selection = _selection(refs, stage, tenant, source_topic, error_contains, since)

    async def go() -> list[str]:
        if not dry_run:  # a dry run creates nothing
            await ensure_marker_topic(settings.kafka_connection(), settings.topic_dead_letter_requeued,
                                      settings.topic_replication_factor)
        letters, markers = await _load(settings)
        chosen = select(letters, selection)
        missing = sorted(str(r) for r in selection.refs - {d.ref for d in chosen})
        producer = make_producer(settings.kafka_connection(), settings.kafka_max_message_bytes)
        await producer.start()
        try:
            summary = await requeue(chosen, markers, ProduceStep(producer, settings.ops_producer_max_in_flight),
                                    dead_letter_topic=settings.topic_dead_letter,
                                    marker_topic=settings.topic_dead_letter_requeued,
                                    allowed_targets=(settings.topic_raw_logs, settings.topic_raw_metrics,
                                                     settings.topic_canonical),
                                    max_message_bytes=settings.kafka_max_message_bytes, dry_run=dry_run)
        finally:
            await producer.stop()
        return summary.describe(dry_run) + [f"  not found: {ref}" for ref in missing]

    for line in _run(go):
        click.echo(line)


@dlq.command("exporter")
@click.option("--port", type=int, default=None, help="Listen port (default: DLQ_EXPORTER_PORT).")
@click.option("--interval", type=float, default=None, help="Seconds between scans (default: from settings).")
def dlq_exporter(port: int | None, interval: float | None) -> None:
    """Serve dead-letter depth gauges on /metrics (with /healthz and /readyz) until SIGTERM."""
    from hypercorn.asyncio import serve  # noqa: PLC0415 - only this long-running command needs a server
    from hypercorn.config import Config  # noqa: PLC0415

    from services.auditctl.ops.exporter import DeadLetterExporter, DeadLetterIndex, DeadLetterMetrics  # noqa: PLC0415

    settings = _settings()
    configure_logging("dlq-exporter", settings.log_level)

    async def go() -> None:
        stop = stop_on_signals()
        registry = CollectorRegistry()
        async with TopicReader(settings.kafka_connection()) as reader:
            exporter = DeadLetterExporter(
                DeadLetterIndex(reader, settings.topic_dead_letter, settings.topic_dead_letter_requeued),
                DeadLetterMetrics(registry), registry, interval or settings.dlq_exporter_interval_seconds)
            config = Config()
            config.bind = [f"{settings.dlq_exporter_host}:{port or settings.dlq_exporter_port}"]
            config.accesslog = None
            scanner = asyncio.create_task(exporter.run(stop))
            try:
                await serve(exporter.app(), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
            finally:
                stop.set()
                await scanner

    _run(go)


COMMANDS = [replay, dlq]
