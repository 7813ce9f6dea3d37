"""Running a service's main coroutine on the event loop its settings choose."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run_service(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    if event_loop == "uvloop":
        import uvloop  # noqa: PLC0415 - optional at import time, chosen by configuration

        uvloop.run(main)
    else:
        asyncio.run(main)
