"""Run the metrics consumer: ``python -m services.usage`` (or ``audit-usage``)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from prometheus_client import CollectorRegistry

from services.usage.settings import UsageSettings
from services.usage.worker import UsageMetrics, UsageWorker
from shared.db.errors import is_retryable_db_error
from shared.db.pool import create_pool
from shared.health import HealthServer
from shared.kafka import KafkaConfigError, make_consumer, make_producer, start_clients
from shared.lifecycle import Lifecycle
from shared.logs import configure_logging
from shared.messages.auth import KeyFileError, load_keyring
from shared.pii import build_engine
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
    try:
        # Metric attributes are redacted like log content; a PII engine that cannot be built stops the service.
        engine = build_engine(None, settings.pii_ner_model or None, settings.pii_field_time_budget_ms)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"usage: cannot build the PII engine: {exc}") from None

    async with Lifecycle("usage", log) as parts:
        pool = await _connect(settings, stop, log)
        parts.on_shutdown("database pool", pool.close)
        registry = CollectorRegistry()
        worker: UsageWorker | None = None
        # Ready only once the group has assigned this member its partitions: a metric sent then is stored.
        health = HealthServer(registry, ready=lambda: worker is not None and worker.assigned and not stop.is_set())
        if settings.usage_metrics_port:
            await health.start("0.0.0.0", settings.usage_metrics_port)  # noqa: S104 - probes come from outside
            parts.on_shutdown("health server", health.stop)
        consumer = make_consumer(settings.kafka_connection(), settings.usage_group_id,
                                 **settings.kafka_consumer_options())
        producer = make_producer(settings.kafka_connection(), settings.kafka_max_message_bytes)
        try:
            await start_clients(consumer, producer, stop=stop, kafka=settings.kafka_connection())
        except KafkaConfigError as exc:
            raise SystemExit(f"usage: {exc}") from None
        parts.on_shutdown("producer", producer.stop)
        parts.on_shutdown("consumer", consumer.stop)
        worker = UsageWorker(consumer, producer, pool, topic=settings.topic_raw_metrics,
                             dead_letter_topic=settings.topic_dead_letter, max_batch=settings.usage_max_batch_messages,
                             metrics=UsageMetrics(registry), stop=stop, engine=engine, raw_keyring=raw_keyring)
        worker.subscribe()
        log.info("joining consumer group", extra={"group": settings.usage_group_id})
        log.info("usage consumer started",
                 extra={"topic": settings.topic_raw_metrics, "group": settings.usage_group_id})
        await worker.run()
    log.info("usage consumer stopped")


def main() -> None:
    asyncio.run(_run(load_settings(UsageSettings)))


if __name__ == "__main__":
    main()
