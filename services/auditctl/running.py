"""Running a command's coroutine; its own module so the command modules and the group that lists them do not
import each other."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    async def runner() -> T:
        return await factory()

    return asyncio.run(runner())
