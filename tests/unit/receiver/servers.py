"""For tests that run a real Hypercorn server on a port: wait until it listens; an ASGI app's body reading."""

from __future__ import annotations

import asyncio
from typing import Any


async def wait_until_listening(port: int, attempts: int = 200) -> None:
    """Returns once 127.0.0.1:``port`` accepts a connection, or after ``attempts`` tries 10 ms apart (the
    test's own first connection then fails with the server's error)."""
    for _ in range(attempts):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        return


async def read_body_size(receive: Any) -> int:
    """An ASGI app's request body read whole; its length in bytes."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return size
