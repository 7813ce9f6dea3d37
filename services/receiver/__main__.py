"""Run the receiver: ``python -m services.receiver`` (or ``audit-receiver``)."""

from __future__ import annotations

import asyncio
import signal

import asyncpg

from hypercorn.asyncio import serve
from hypercorn.config import Config

from services.receiver.app import create_app, load_issuer_public_keys
from services.receiver.settings import ReceiverSettings
from shared.db.pool import create_pool
from shared.keys import KeyMaterialError
from shared.licensing import LicenseVerifier
from shared.logs import configure_logging
from shared.settings import load_settings


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


async def _serve(settings: ReceiverSettings) -> None:
    log = configure_logging("receiver", settings.log_level)
    try:
        verifier = LicenseVerifier.from_public_keys(load_issuer_public_keys(settings.license_public_keys_file))
    except KeyMaterialError as exc:
        raise SystemExit(f"receiver: {exc}") from None

    revocations = RevocationList(settings.database_url)
    app = create_app(settings, verifier, revocations=revocations.fetch)
    config = Config()
    config.bind = [f"{settings.receiver_host}:{settings.receiver_port}"]
    config.accesslog = None
    config.keep_alive_timeout = 75
    config.graceful_timeout = 15

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("receiver listening", extra={"bind": config.bind})
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    await revocations.close()


def main() -> None:
    asyncio.run(_serve(load_settings(ReceiverSettings)))


if __name__ == "__main__":
    main()
