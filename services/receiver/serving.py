"""Hypercorn, with less bookkeeping per request on HTTP/1.1 keep-alive connections.

Exporters keep one connection open and send request after request on it, so what Hypercorn does around
each request is paid once per export. Two of those costs are bookkeeping rather than HTTP, and are cut
here; parsing and framing (h11), the ASGI messages and every protocol check stay Hypercorn's own.

- The keep-alive idle timeout. Hypercorn runs it as a task per idle period: each request cancels it (and
  waits for the cancellation) and each response starts a new one, which itself starts a second task
  inside ``asyncio.wait_for``. Here it is one timer handle, cancelled and re-armed, with the same
  behaviour: an idle connection is closed after ``keep_alive_timeout``, and at once when the server is
  shutting down (``context.terminated``), whether it was idle already or becomes idle later.
- The Date header, formatted anew for every response (``wsgiref``'s ``format_date_time``); here once per
  second, which is its resolution.

``install`` puts the connection class in place of Hypercorn's in this process (its asyncio worker looks
``TCPServer`` up when a connection arrives); tests/unit/receiver/test_serving.py holds both to the
behaviour above through a real server.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any
from wsgiref.handlers import format_date_time

import hypercorn.asyncio.run
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.typing import TaskGroup


class ReceiverConfig(Config):
    """Hypercorn's configuration; the Date header formatted here, once per second."""

    include_date_header = False  # Hypercorn's own, formatted for every response, is replaced by the one below
    _date_second = -1
    _date_value = b""

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        second = int(time.time())
        if second != self._date_second:
            self._date_value = format_date_time(second).encode("ascii")
            self._date_second = second
        return [(b"date", self._date_value), *super().response_headers(protocol)]


class _IdleTimer:
    """Stands in for Hypercorn's ``AsyncioSingleTask`` as the connection's idle task: same calls."""

    __slots__ = ("_handle", "_idle", "_server")

    def __init__(self, server: LeanTCPServer) -> None:
        self._server = server
        self._handle: asyncio.TimerHandle | None = None
        self._idle = _idle_timers(server.context)

    async def restart(self, task_group: TaskGroup, action: Any) -> None:
        self._cancel()
        server = self._server
        if server.context.terminated.is_set():
            self.expire()
            return
        self._handle = server.loop.call_later(server.config.keep_alive_timeout, self.expire)
        self._idle.add(self)

    async def stop(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._idle.discard(self)

    def expire(self) -> None:
        """Close the idle connection, as Hypercorn's idle task does when its wait ends."""
        self._cancel()
        _spawn(self._server.loop, self._server.close_idle())


class LeanTCPServer(TCPServer):
    """Hypercorn's connection, its idle timeout a timer handle (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_task = _IdleTimer(self)  # type: ignore[assignment]
        _watch_termination(self.context)

    async def close_idle(self) -> None:
        await asyncio.shield(self._initiate_server_close())


# Per server (one worker context each): the timers of its idle connections, and the task that closes them
# when the server shuts down. A timer is in the set only while armed; stopping it (a request arrives, the
# connection closes) takes it out, so the set holds no closed connection.
_timers: weakref.WeakKeyDictionary[WorkerContext, set[_IdleTimer]] = weakref.WeakKeyDictionary()
_watchers: weakref.WeakKeyDictionary[WorkerContext, asyncio.Task[None]] = weakref.WeakKeyDictionary()
_background: set[asyncio.Task[None]] = set()


def _idle_timers(context: WorkerContext) -> set[_IdleTimer]:
    timers = _timers.get(context)
    if timers is None:
        timers = _timers[context] = set()
    return timers


def _spawn(loop: asyncio.AbstractEventLoop, coroutine: Any) -> None:
    task = loop.create_task(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _watch_termination(context: WorkerContext) -> None:
    """One task per server: when it starts shutting down, every connection idle then is closed at once
    (connections busy then close after their response, Hypercorn's own check)."""
    if context in _watchers:
        return

    async def close_idle_connections() -> None:
        await context.terminated.wait()
        for timer in list(_idle_timers(context)):
            timer.expire()
        _timers.pop(context, None)
        _watchers.pop(context, None)

    _watchers[context] = asyncio.get_running_loop().create_task(close_idle_connections())


def install() -> None:
    """Serve every connection of this process's Hypercorn asyncio worker with ``LeanTCPServer``."""
    hypercorn.asyncio.run.TCPServer = LeanTCPServer  # type: ignore[attr-defined]
