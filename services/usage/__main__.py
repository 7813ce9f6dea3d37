"""Run the metrics consumer: ``python -m services.usage`` (or ``audit-usage``)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from prometheus_client import CollectorRegistry

from services.usage.settings import UsageSettings
from services.usage.worker import UsageMetrics, UsageWorker
from shared.canonicalize.transform import TextRedactor
from shared.db.errors import is_retryable_db_error
from shared.db.pool import create_pool
from shared.health import HealthServer
from shared.kafka import make_consumer, make_producer
from shared.lifecycle import BuildWhileJoining, Lifecycle
from shared.logs import configure_logging
from shared.messages.auth import KeyFileError, load_keyring
from shared.pipeline import Backoff
from shared.runtime import stop_on_signals
from shared.settings import load_settings


async def _connect(settings: UsageSettings, stop: asyncio.Event, log: logging.Logger) -> asyncpg.Pool:
    backoff = Backoff(0.5, 10.0)
    while True:
        try:
            return await create_pool(settings.database_url, min_size=1, max_size=settings.usage_db_pool_size)
        except Exception as exc:
            if not is_retryable_db_error(exc) or stop.is_set():
                raise
            log.warning("database not reachable yet, retrying", extra={"error": repr(exc)})
            await backoff.sleep(stop)


async def _run(settings: UsageSettings) -> None:
    log = configure_logging("usage", settings.log_level)
    try:
        raw_keyring = load_keyring(settings.raw_auth_key_file, "RAW_AUTH_KEY_FILE")
    except KeyFileError as exc:
        raise SystemExit(f"usage: {exc}") from None
    stop = stop_on_signals()

    def build_default_engine() -> TextRedactor:
        # shared.pii brings spaCy, more than a second of imports: imported on the thread that builds the engine.
        from shared.pii import build_engine  # noqa: PLC0415

        return build_engine(None, settings.pii_ner_model or None, settings.pii_field_time_budget_ms)

    # Metric attributes are redacted like log content; a PII engine that cannot be built stops the service. It is
    # built while the consumer joins its group.
    engine = BuildWhileJoining("usage", "the PII engine", build_default_engine, stop)

    async with Lifecycle("usage", log) as parts:
        pool = await _connect(settings, stop, log)
        parts.on_shutdown("database pool", pool.close)
        registry = CollectorRegistry()
        worker: UsageWorker | None = None
        # Ready only once the PII engine is built and the group has assigned this member its partitions: a metric sent
        # then is stored.
        health = HealthServer(registry, ready=lambda: engine.ready() and worker is not None and worker.assigned
                              and not stop.is_set())
        if settings.usage_metrics_port:
            await health.start("0.0.0.0", settings.usage_metrics_port)  # noqa: S104 - probes come from outside
            parts.on_shutdown("health server", health.stop)
        consumer = make_consumer(settings.kafka_connection(), settings.usage_group_id,
                                 **settings.kafka_consumer_options())
        producer = make_producer(settings.kafka_connection(), settings.kafka_max_message_bytes)
        try:
            await parts.start_kafka_clients(producer, consumer, stop=stop, kafka=settings.kafka_connection())
        except SystemExit:
            if engine.done():
                await engine.result()  # a bad PII setting stopped the start: say so rather than stop quietly
            raise
        # The worker is given its engine before it processes anything (below); until then it is not ready.
        worker = UsageWorker(consumer, producer, pool, topic=settings.topic_raw_metrics,
                             dead_letter_topic=settings.topic_dead_letter, max_batch=settings.usage_max_batch_messages,
                             metrics=UsageMetrics(registry), stop=stop, engine=None, raw_keyring=raw_keyring)
        worker.subscribe()
        engine.joining.set()
        log.info("joining consumer group", extra={"group": settings.usage_group_id})
        worker.engine = await engine.result()
        log.info("usage consumer started",
                 extra={"topic": settings.topic_raw_metrics, "group": settings.usage_group_id})
        await worker.run()
    log.info("usage consumer stopped")


def main() -> None:
    asyncio.run(_run(load_settings(UsageSettings)))


if __name__ == "__main__":
    main()
