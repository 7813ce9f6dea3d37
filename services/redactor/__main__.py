"""Run the redactor: ``python -m services.redactor`` (or ``audit-redactor``)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from services.redactor.head_start import HeadStart, Keep
from services.redactor.posture import PostureBook, refresh_postures
from services.redactor.settings import RedactorSettings
from services.redactor.worker import RedactorMetrics, RedactorWorker, TransformStep
from shared.canonicalize.transform import TextRedactor, TransformPolicy
from shared.health import HealthServer
from shared.kafka import BatchingProducer, make_consumer, make_producer
from shared.lifecycle import BuildWhileJoining, Lifecycle
from shared.logs import configure_logging
from shared.messages.auth import KeyFileError, load_keyring, load_signing_key
from shared.runtime import stop_on_signals
from shared.settings import load_settings

_FIRST_POSTURES_WAIT_S = 10.0


def _engine_factory(settings: RedactorSettings) -> Callable[[frozenset[str] | None], TextRedactor]:
    def engine_for_kinds(kinds: frozenset[str] | None) -> TextRedactor:
        # shared.pii brings spaCy, more than a second of imports: it is imported on the thread that builds the
        # engine while the consumer joins its group, not before the join starts.
        from shared.pii import build_engine  # noqa: PLC0415

        chosen = settings.pii_kinds if kinds is None else sorted(kinds)
        return build_engine(chosen, settings.pii_ner_model or None, settings.pii_field_time_budget_ms)

    return engine_for_kinds


def _keep_long_lived_objects_out_of_collector() -> None:
    """Tune the cyclic garbage collector once the PII engine is built.

    The engine (spaCy's model, the name gazetteer, compiled rules) lives as long as the process: frozen, it is left
    out of the collector's full passes, which walked all of it (about 100 ms each, a latency spike every time). A
    batch allocates many short-lived containers that reference counting frees; at the default threshold the
    collector ran every few events. It still runs, rarely enough to bound what cyclic garbage can hold.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


async def _run(settings: RedactorSettings) -> None:
    log = configure_logging("redactor", settings.log_level)
    engine_for_kinds = _engine_factory(settings)
    postures = PostureBook(engine_for_kinds, globally_enabled=settings.pii_detection_enabled)

    def build_default_engine() -> None:
        postures.engine_for("")
        engine_for_kinds(None)  # engine_for logs a bad setting and withholds; this raises it

    stop = stop_on_signals()
    engine = BuildWhileJoining("redactor", "the PII engine", build_default_engine, stop)

    try:
        raw_keyring = load_keyring(settings.raw_auth_key_file, "RAW_AUTH_KEY_FILE")
        canonical_key = load_signing_key(settings.canonical_auth_key_file, "CANONICAL_AUTH_KEY_FILE")
    except KeyFileError as exc:
        raise SystemExit(f"redactor: {exc}") from None
    registry = CollectorRegistry()
    policy = TransformPolicy(
        plane_by_service=settings.plane_by_service,
        default_plane=settings.default_plane,
        keep_other_events=settings.other_event_policy == "keep",
        keep_unknown_attributes=settings.unknown_attribute_policy == "keep",
    )
    consumer = make_consumer(
        settings.kafka_connection(), settings.redactor_group_id, **settings.kafka_consumer_options()
    )
    # Canonical events are about 1 KiB and come in bursts of a raw batch's records, which the worker hands over
    # together (BatchingProducer): record batches of up to 256 KiB per partition (aiokafka's default is 16 KiB)
    # carry a burst in one produce request. Those batches are complete when handed over, so they do not linger.
    producer = BatchingProducer(make_producer(
        settings.kafka_connection(), settings.kafka_max_message_bytes,
        max_batch_size=min(256 * 1024, settings.kafka_max_message_bytes), linger_ms=0))
    worker = RedactorWorker(
        consumer,
        producer,
        postures,
        policy,
        raw_topic=settings.topic_raw_logs,
        canonical_topic=settings.topic_canonical,
        dead_letter_topic=settings.topic_dead_letter,
        max_pending=settings.redactor_max_pending_messages,
        metrics=RedactorMetrics(registry),
        raw_keyring=raw_keyring,
        canonical_key=canonical_key,
        max_message_bytes=settings.kafka_max_message_bytes,
    )

    def transform_ahead(keep: Keep) -> TransformStep:
        # The worker's transform with its own metrics: what is transformed ahead is counted once handed over.
        return TransformStep(postures, policy, settings.topic_canonical, settings.topic_dead_letter, keep,
                             RedactorMetrics(CollectorRegistry()), raw_keyring=raw_keyring,
                             canonical_key=canonical_key, max_message_bytes=settings.kafka_max_message_bytes)

    refresher: asyncio.Task[None] | None = None
    postures_loaded, processing = asyncio.Event(), asyncio.Event()
    # Ready only once the PII engine is built, the postures are loaded (or waited for long enough) and the group has
    # assigned this member its partitions: an event sent then is processed, under its tenant's posture.
    health = HealthServer(registry, ready=lambda: processing.is_set() and worker.assigned and not stop.is_set())

    async def stop_work() -> None:
        stop.set()
        if refresher is not None:
            await refresher

    async with Lifecycle("redactor", log) as parts:
        if settings.redactor_metrics_port:
            # Probes come from outside the pod.
            await parts.start("health server", lambda: health.start("0.0.0.0", settings.redactor_metrics_port),  # noqa: S104
                              health.stop)
        try:
            await parts.start_kafka_clients(producer, consumer, stop=stop, kafka=settings.kafka_connection())
        except SystemExit:
            if engine.done():
                await engine.result()  # a bad PII setting stopped the start: say so rather than stop quietly
            raise
        parts.on_shutdown("posture refresher", stop_work)
        worker.subscribe()
        engine.joining.set()
        log.info("joining consumer group", extra={"group": settings.redactor_group_id})
        # The tenants' detection postures load while the consumer joins and the engine builds. Events wait for the
        # first load (until then the default posture applies: a tenant that turned detection off would have its
        # content masked instead of withheld), but not for a database that is away: after _FIRST_POSTURES_WAIT_S
        # every kind is masked until it answers.
        refresher = asyncio.create_task(refresh_postures(
            postures, settings.database_url, settings.posture_refresh_seconds, stop, postures_loaded))
        await engine.result()
        _keep_long_lived_objects_out_of_collector()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(postures_loaded.wait(), _FIRST_POSTURES_WAIT_S)
        if settings.redactor_head_start_max_bytes and not worker.assigned:
            # Still waiting for the group: transform the backlog meanwhile. A consumer in the same group only for
            # its committed offsets, assigned by hand: it never joins, commits or takes a partition from anyone.
            worker.head_start = HeadStart(
                make_consumer(settings.kafka_connection(), settings.redactor_group_id,
                              fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms),
                transform_ahead, settings.topic_raw_logs, settings.redactor_head_start_max_bytes)
            worker.head_start.start()
        processing.set()
        log.info("redactor running", extra={"topic": settings.topic_raw_logs, "postures": postures_loaded.is_set()})
        await worker.run(stop)


def main() -> None:
    asyncio.run(_run(load_settings(RedactorSettings)))


if __name__ == "__main__":
    main()
