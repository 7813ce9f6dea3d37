"""Run the signer: ``python -m services.signer`` (or ``audit-signer``)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Sequence
from datetime import timedelta

import asyncpg
from prometheus_client import CollectorRegistry

from services.signer.appender import CheckpointPolicy, RetiredKey, require_enrolled_key
from services.signer.publisher import PublisherMetrics, run_publisher
from services.signer.settings import SignerSettings
from services.signer.signing import BatchSigner, HelperProcessSigner, InlineSigner, TreeHeadsOnly
from services.signer.worker import SignerMetrics, SignerWorker
from shared.db.errors import is_retryable_db_error
from shared.db.pool import create_pool
from shared.enrollment import UnenrolledKey, pinned_keys
from shared.health import HealthServer
from shared.kafka import make_consumer, make_producer
from shared.keys import Ed25519Signer, KeyMaterialError, load_signer
from shared.lifecycle import Lifecycle
from shared.logs import configure_logging
from shared.messages.auth import KeyFileError, Keyring, load_scoped_keyring
from shared.pipeline import Backoff
from shared.runtime import run_service, stop_on_signals
from shared.settings import load_settings
from shared.witness import S3Witness, Witness, WitnessError, witness_from_settings


async def _run(settings: SignerSettings) -> None:
    log = configure_logging("signer", settings.log_level)
    try:
        signer = load_signer(file=settings.signing_key_file, env_var=settings.signing_key_env)
    except KeyMaterialError as exc:
        raise SystemExit(f"signer: {exc}") from None
    try:
        keyring = load_scoped_keyring(settings.canonical_auth_keyring_file, "CANONICAL_AUTH_KEYRING_FILE")
    except KeyFileError as exc:
        raise SystemExit(f"signer: {exc}") from None
    stop = stop_on_signals()
    witness = witness_from_settings(settings)
    try:
        if isinstance(witness, S3Witness):
            witness.check_object_lock()
        pinned = None if witness is None else await pinned_keys(witness)
    except (WitnessError, OSError, ValueError) as exc:
        raise SystemExit(f"signer: cannot read the witness ({exc})") from None

    backoff = Backoff(0.5, 10.0)
    while True:
        try:
            # One connection more than the appends need: the witness publisher's.
            pool = await create_pool(settings.database_url, min_size=1, max_size=4, bulk_writer=True)
            async with pool.acquire() as conn:
                await require_enrolled_key(conn, signer, pinned)
            break
        except RetiredKey as exc:
            raise SystemExit(f"signer: {exc}; configure the key that replaced it") from None
        except UnenrolledKey as exc:
            raise SystemExit(f"signer: refusing to sign: {exc}") from None
        except Exception as exc:
            if not is_retryable_db_error(exc) or stop.is_set():
                raise
            log.warning("database not reachable yet, retrying", extra={"error": repr(exc)})
            await backoff.sleep(stop)

    async with Lifecycle("signer", log) as parts:
        parts.on_shutdown("database pool", pool.close)
        await _serve(settings, parts, pool, signer, witness=witness, stop=stop, log=log, keyring=keyring)


class _StartingHelper:
    """The signing helper process (half a second to start: Python, PyNaCl, a probe signature), started while the
    Kafka clients start and the consumer joins its group, not before. Nothing is signed before the group assigns
    partitions and ``wait_started`` has returned; a helper that fails to start ends the service there."""

    def __init__(self, signer: Ed25519Signer) -> None:
        self._starting = asyncio.ensure_future(HelperProcessSigner.start(signer))
        self._helper: HelperProcessSigner | None = None  # once started

    def started(self) -> bool:
        if self._helper is None and self._starting.done() and not self._starting.cancelled() \
                and self._starting.exception() is None:
            self._helper = self._starting.result()
        return self._helper is not None

    async def wait_started(self) -> None:
        await self._starting

    def sign_many(self, digests: Sequence[bytes]) -> Awaitable[list[bytes]]:
        helper = self._helper
        if helper is None and self.started():
            helper = self._helper
        if helper is not None:
            return helper.sign_many(digests)  # the helper's own future: no task per request
        return self._sign_once_started(digests)

    async def _sign_once_started(self, digests: Sequence[bytes]) -> list[bytes]:
        return await (await self._starting).sign_many(digests)

    async def close(self) -> None:
        if not self._starting.done():
            self._starting.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            helper = await self._starting
            await helper.close()


async def _serve(settings: SignerSettings, parts: Lifecycle, pool: asyncpg.Pool, signer: Ed25519Signer, *,
                 witness: Witness | None, stop: asyncio.Event, log: logging.Logger, keyring: Keyring) -> None:
    registry = CollectorRegistry()
    worker: SignerWorker | None = None
    helper: _StartingHelper | None = None

    def signing_ready() -> bool:
        return helper is None or helper.started()

    # Ready only once the group has assigned this member its partitions and it has sought to the offsets
    # stored with the rows: an event sent then is appended.
    health = HealthServer(registry, ready=lambda: worker is not None and worker.assigned and signing_ready()
                          and not stop.is_set())
    if settings.signer_metrics_port:
        # Probes come from outside the pod.
        await parts.start("health server", lambda: health.start("0.0.0.0", settings.signer_metrics_port),  # noqa: S104
                          health.stop)
    consumer = make_consumer(settings.kafka_connection(), settings.signer_group_id, **settings.kafka_consumer_options())
    producer = make_producer(settings.kafka_connection(), settings.kafka_max_message_bytes)
    batch_signer: BatchSigner
    checkpoint_every_rows = settings.checkpoint_every_rows
    if settings.signing_mode == "batch":
        # The tree head of every chain a batch grew is signed in that batch's transaction: one checkpoint per
        # chain per batch (every_rows=1), and no row signatures.
        batch_signer, checkpoint_every_rows = TreeHeadsOnly(), 1
    elif settings.signer_signing_helper:
        batch_signer = helper = _StartingHelper(signer)
    else:
        batch_signer = InlineSigner(signer)
    parts.on_shutdown("batch signer", batch_signer.close)
    await parts.start_kafka_clients(producer, consumer, stop=stop, kafka=settings.kafka_connection())
    worker = SignerWorker(
        consumer,
        producer,
        pool,
        signer,
        group=settings.signer_group_id,
        topic=settings.topic_canonical,
        dead_letter_topic=settings.topic_dead_letter,
        max_batch=settings.signer_max_batch,
        metrics=SignerMetrics(registry),
        stop=stop,
        checkpoints=CheckpointPolicy(
            every_rows=checkpoint_every_rows, every=timedelta(seconds=settings.checkpoint_every_seconds)
        ),
        batch_signer=batch_signer,
        keyring=keyring,
    )
    # Each row allocates a few dozen objects, none of them in reference cycles: with the default threshold
    # the cyclic collector ran every few rows and walked every batch in flight. It still runs, rarely: once
    # per million allocations (tens of thousands of rows), each time walking only what is in flight then.
    gc.freeze()
    gc.set_threshold(1_000_000, 50, 100)
    publisher = None
    if witness is not None:
        publisher = asyncio.create_task(run_publisher(pool, witness, stop, metrics=PublisherMetrics(registry)))

    async def stop_work() -> None:
        stop.set()
        if publisher is not None:
            await publisher

    parts.on_shutdown("witness publisher", stop_work)
    worker.subscribe()
    log.info("joining consumer group", extra={"group": settings.signer_group_id})
    if helper is not None:
        await helper.wait_started()  # a helper that cannot sign, or signs with another key, stops the service here
    log.info(
        "signer running",
        extra={
            "key_id": signer.key_id,
            "topic": settings.topic_canonical,
            "signing_mode": settings.signing_mode,
            "witness": witness.description if witness else "none",
        },
    )
    await worker.run()


def main() -> None:
    settings = load_settings(SignerSettings)
    run_service(_run(settings), settings.signer_event_loop)


if __name__ == "__main__":
    main()
