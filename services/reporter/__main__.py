"""Run the reporter: ``python -m services.reporter`` (or ``audit-reporter``).

On SIGTERM (or SIGINT) it stops accepting connections, lets in-flight requests finish, stops the
background work and exits 0.
"""

from __future__ import annotations

from hypercorn.asyncio import serve
from hypercorn.config import Config

from services.reporter.app import create_app
from services.reporter.settings import ReporterSettings
from shared.keys import KeyMaterialError
from shared.licence_auth import load_issuer_public_keys
from shared.licensing import LicenseVerifier
from shared.logs import configure_logging
from shared.messages.auth import KeyFileError, load_signing_key
from shared.runtime import run_service, stop_on_signals
from shared.settings import load_settings


def hypercorn_config(settings: ReporterSettings) -> Config:
    config = Config()
    config.bind = [f"{settings.reporter_host}:{settings.reporter_port}"]
    config.accesslog = None
    config.include_server_header = False
    config.graceful_timeout = settings.reporter_shutdown_grace_seconds
    return config


async def _serve(settings: ReporterSettings) -> None:
    log = configure_logging("reporter", settings.log_level)
    try:
        verifier = LicenseVerifier.from_public_keys(load_issuer_public_keys(settings.license_public_keys_file))
        access_key = load_signing_key(settings.reporter_access_auth_key_file, "REPORTER_ACCESS_AUTH_KEY_FILE")
    except (KeyMaterialError, KeyFileError) as exc:
        raise SystemExit(f"reporter: {exc}") from None
    app = create_app(settings, verifier, access_key=access_key)
    config = hypercorn_config(settings)
    stop = stop_on_signals()

    async def shutdown_trigger() -> None:
        await stop.wait()
        app.state.reporter.draining = True

    log.info("reporter listening", extra={"bind": config.bind})
    await serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
    log.info("reporter stopped")


def main() -> None:
    settings = load_settings(ReporterSettings)
    run_service(_serve(settings), settings.reporter_event_loop)


if __name__ == "__main__":
    main()
