"""Run the receiver: ``python -m services.receiver`` (or ``audit-receiver``).

On SIGTERM (or SIGINT) it stops accepting connections, lets in-flight requests finish (each waits for
the broker's acknowledgement), flushes the producer, and exits 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from hypercorn.asyncio import serve
from hypercorn.config import Config

from services.receiver import serving
from services.receiver.app import ReceiverState, create_app, readiness
from services.receiver.memory import keep_freed_memory_for_reuse
from services.receiver.settings import ReceiverSettings
from shared.db.pool import create_pool
from shared.health import HealthServer
from shared.kafka import KafkaConfigError, refuse_misconfigured_client
from shared.keys import KeyMaterialError
from shared.licence_auth import load_issuer_public_keys
from shared.licensing import LicenseVerifier
from shared.lifecycle import Lifecycle
from shared.logs import configure_logging
from shared.messages.auth import KeyFileError, load_signing_key
from shared.runtime import run_service, stop_on_signals
from shared.settings import load_settings

_GC_YOUNG_THRESHOLD = 20_000


class RevocationList:
    """Reads revoked licence ids; connects lazily so the receiver starts while PostgreSQL is away."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = None

    async def fetch(self) -> list[str]:
        if self._pool is None:
            self._pool = await create_pool(self._dsn, min_size=1, max_size=1)
        rows = await self._pool.fetch("SELECT license_id FROM licenses WHERE revoked_at IS NOT NULL")
        return [row["license_id"] for row in rows]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


def hypercorn_config(settings: ReceiverSettings) -> Config:
    # Whoever serves the receiver with this configuration gets its lighter keep-alive bookkeeping too.
    serving.install()
    config = serving.ReceiverConfig()
    config.bind = [f"{settings.receiver_host}:{settings.receiver_port}"]
    config.accesslog = None
    # Through the JSON log handler like everything else, not Hypercorn's own stderr writer as well.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    config.backlog = 1024
    # Exporters keep one connection open and send every few seconds; longer than their export interval.
    config.keep_alive_timeout = 75
    # Hypercorn closes a connection after this many requests by default (1000); exporters reconnect
    # for nothing then.
    config.keep_alive_max_requests = 1_000_000
    # After SIGTERM: in-flight requests get this long to be acknowledged before the lifespan stops.
    config.graceful_timeout = settings.shutdown_grace_seconds
    return config


def _shutdown_trigger(state: ReceiverState, stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
    async def wait_for_signal() -> None:
        await stop.wait()
        state.begin_drain()

    return wait_for_signal


async def _serve(settings: ReceiverSettings) -> None:
    log = configure_logging("receiver", settings.log_level)
    try:
        verifier = LicenseVerifier.from_public_keys(load_issuer_public_keys(settings.license_public_keys_file))
    except KeyMaterialError as exc:
        raise SystemExit(f"receiver: {exc}") from None

    try:  # read again by create_app; here a missing or open key file stops the service with its name
        load_signing_key(settings.raw_auth_key_file, "RAW_AUTH_KEY_FILE")
    except KeyFileError as exc:
        raise SystemExit(f"receiver: {exc}") from None

    try:
        # A broker certificate we do not trust would otherwise show only as "broker not reachable" retries.
        await refuse_misconfigured_client(settings.kafka_connection())
    except KafkaConfigError as exc:
        raise SystemExit(f"receiver: {exc}") from None
    revocations = RevocationList(settings.database_url)
    app = create_app(settings, verifier, revocations=revocations.fetch)
    config = hypercorn_config(settings)
    stop = stop_on_signals()
    # Everything built so far (modules, app, settings) lives as long as the process: keep it out of the
    # cyclic collector's full passes, which otherwise grow with it and show up as latency spikes.
    gc.collect()
    gc.freeze()
    # A request allocates a few hundred container objects, nearly all freed by reference counting; at the
    # default threshold (700) the collector ran every couple of requests and took a few percent of the
    # CPU. Collections stay frequent enough to bound what cyclic garbage can hold.
    gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    keep_freed_memory_for_reuse()  # see services/receiver/memory.py: a tenth of the CPU went to page faults
    state: ReceiverState = app.state.receiver
    health = HealthServer(state.registry, ready=lambda: all(readiness(state).values()))
    async with Lifecycle("receiver", log) as parts:
        parts.on_shutdown("revocation list", revocations.close)
        if settings.receiver_metrics_port:
            await parts.start("health server",
                              lambda: health.start(settings.receiver_host, settings.receiver_metrics_port),
                              health.stop)
        log.info(
            "receiver listening",
            extra={
                "bind": config.bind,
                "metrics_port": settings.receiver_metrics_port,
                "event_loop": settings.receiver_event_loop,
            },
        )
        await serve(app, config, shutdown_trigger=_shutdown_trigger(state, stop))  # type: ignore[arg-type]
    log.info("receiver stopped")


def main() -> None:
    settings = load_settings(ReceiverSettings)
    run_service(_serve(settings), settings.receiver_event_loop)


if __name__ == "__main__":
    main()
