"""Running a service: its main coroutine on the event loop its settings choose, and how it is told to stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any


def run_service(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    if event_loop == "uvloop":
        import uvloop  # noqa: PLC0415 - optional at import time, chosen by configuration

        uvloop.run(main)
    else:
        asyncio.run(main)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: services finish what is in flight, commit, then exit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
