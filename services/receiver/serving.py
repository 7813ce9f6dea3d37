"""Hypercorn, with less bookkeeping per request on HTTP/1.1 keep-alive connections.

Exporters keep one connection open and send request after request on it, so what Hypercorn does around
each request is paid once per export. Three of those costs are bookkeeping rather than HTTP, and are cut
here; parsing and framing (h11), the ASGI messages and every protocol check stay Hypercorn's own.

- The keep-alive idle timeout. Hypercorn runs it as a task per idle period: each request cancels it (and
  waits for the cancellation) and each response starts a new one, which itself starts a second task
  inside ``asyncio.wait_for``. Here a request and a response only note the time; one timer per
  connection, re-armed when it fires, checks whether the connection has been idle long enough. The
  behaviour is the same: an idle connection is closed after ``keep_alive_timeout``, and at once when the
  server is shutting down (``context.terminated``), whether it was idle already or becomes idle later.
- The Date header, formatted anew for every response (``wsgiref``'s ``format_date_time``); here once per
  second, which is its resolution.
- Writes. Hypercorn writes a response's head and its body separately, and uvloop sends each write at
  once: two system calls and two wake-ups of the client per response. Here the small writes made in one
  loop iteration go out as one, at its end (or before anything else is sent or the connection closes);
  large writes, and a client that does not read its answers, get Hypercorn's back-pressure as before.
- Reads. The connection's ``StreamReader`` copies every byte received into its buffer, and again out of
  it, 64 KiB at a time: twice per request body. ``ChunkReader`` keeps what the transport hands over as it
  is and gives it on whole, with the same flow control (reading paused past twice the limit, resumed at
  the limit); the parser gets the same bytes, in at most as many pieces.

``install`` puts the connection class in place of Hypercorn's in this process (its asyncio worker looks
``TCPServer`` up when a connection arrives); tests/unit/receiver/test_serving.py holds both to the
behaviour above through a real server.
"""

from __future__ import annotations

import asyncio
import collections
import time
import weakref
from ssl import SSLError
from typing import TYPE_CHECKING, Any
from wsgiref.handlers import format_date_time

import hypercorn.asyncio.run
import hypercorn.asyncio.tcp_server
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.typing import TaskGroup

from services.receiver.http11 import ReceiverProtocolWrapper

# Writes smaller than this are joined with the others of the same loop iteration (uvloop sends each write
# at once, a system call and a wake-up of the client each); larger ones, and more than this pending in
# all, are written at once and waited for as Hypercorn does.
_JOIN_BELOW = 64 * 1024
_NOTHING = RawData(data=b"")  # Hypercorn's write-and-drain, with nothing more to write
_READ_AT_MOST = 2**16  # Hypercorn's read size, for a reader that is not a ChunkReader


class ReceiverConfig(Config):
    """Hypercorn's configuration; the Date header formatted here, and the response headers made, once per second."""

    include_date_header = False  # Hypercorn's own, formatted for every response, is replaced by the one below
    _date_second = -1
    _headers: dict[str, list[tuple[bytes, bytes]]] | None = None  # by protocol, for ``_date_second``

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        second = int(time.time())
        if second != self._date_second or self._headers is None:
            self._headers = {}
            self._date_second = second
        headers = self._headers.get(protocol)
        if headers is None:
            date = format_date_time(second).encode("ascii")
            headers = self._headers[protocol] = [(b"date", date), *super().response_headers(protocol)]
        return list(headers)  # a copy: callers may add to it


class ChunkReader(asyncio.StreamReader):
    """A ``StreamReader`` that keeps the chunks the transport hands over as they are (see the module docstring).

    A connection's reader becomes one (``adopt``) before anything reads from it; only ``read`` and
    ``read_chunk`` read from it then (Hypercorn uses nothing else), and ``read`` keeps its contract (at most
    ``n`` bytes, ``b""`` at the end)."""

    _chunks: collections.deque[bytes]
    _chunk_bytes: int
    # StreamReader's own state, which typeshed does not declare.
    _buffer: bytearray
    _eof: bool
    _exception: BaseException | None
    _limit: int
    _paused: bool
    _transport: asyncio.Transport | None

    if TYPE_CHECKING:
        def _wakeup_waiter(self) -> None: ...

        async def _wait_for_data(self, func_name: str) -> None: ...

    @classmethod
    def adopt(cls, reader: asyncio.StreamReader) -> None:
        buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
        held = bytes(buffer)  # what arrived before the connection was served
        buffer.clear()
        reader.__class__ = cls
        assert isinstance(reader, ChunkReader)
        reader._chunks = collections.deque()
        reader._chunk_bytes = 0
        if held:
            reader._chunks.append(held)
            reader._chunk_bytes = len(held)

    def feed_data(self, data: bytes) -> None:  # type: ignore[override]  # typeshed: any iterable of ints
        assert not self._eof, "feed_data after feed_eof"
        if not data:
            return
        self._chunks.append(data if type(data) is bytes else bytes(data))  # uvloop hands over new bytes each time
        self._chunk_bytes += len(data)
        self._wakeup_waiter()
        if self._transport is not None and not self._paused and self._chunk_bytes > 2 * self._limit:
            try:
                self._transport.pause_reading()
            except NotImplementedError:
                self._transport = None
            else:
                self._paused = True

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    async def read_chunk(self) -> bytes:
        """The oldest chunk not read yet, whole; ``b""`` at the end."""
        if self._exception is not None:
            raise self._exception
        if not self._chunks and not self._eof:
            await self._wait_for_data("read")
        if not self._chunks:
            return b""
        data = self._chunks.popleft()
        self._chunk_bytes -= len(data)
        if self._paused and self._chunk_bytes <= self._limit:
            self._paused = False
            assert self._transport is not None
            self._transport.resume_reading()
        return data

    async def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        data = await self.read_chunk()
        if 0 < n < len(data):
            self._chunks.appendleft(data[n:])
            self._chunk_bytes += len(data) - n
            data = data[:n]
        return data


class _IdleTimer:
    """Stands in for Hypercorn's ``AsyncioSingleTask`` as the connection's idle task: same calls."""

    __slots__ = ("_handle", "_idle_since", "_server")

    def __init__(self, server: LeanTCPServer) -> None:
        self._server = server
        self._handle: asyncio.TimerHandle | None = None
        self._idle_since: float | None = None  # None while a request is in progress

    async def restart(self, task_group: TaskGroup, action: Any) -> None:
        server = self._server
        if server.context.terminated.is_set():
            self.expire()
            return
        self._idle_since = server.loop.time()
        if self._handle is None:
            self._handle = server.loop.call_later(server.config.keep_alive_timeout, self._check)

    async def stop(self) -> None:
        self._idle_since = None

    @property
    def idle(self) -> bool:
        return self._idle_since is not None

    def _check(self) -> None:
        self._handle = None
        if self._idle_since is None:
            return  # busy: the response re-arms the timer
        server = self._server
        remaining = self._idle_since + server.config.keep_alive_timeout - server.loop.time()
        if remaining > 0:
            self._handle = server.loop.call_later(remaining, self._check)
        else:
            self.expire()

    def expire(self) -> None:
        """Close the idle connection, as Hypercorn's idle task does when its wait ends."""
        self.cancel()
        _spawn(self._server.loop, self._server.close_idle())

    def cancel(self) -> None:
        self._idle_since = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class LeanTCPServer(TCPServer):
    """Hypercorn's connection: its idle timeout a timer, its small writes joined (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_timer = _IdleTimer(self)
        self.idle_task = self.idle_timer  # type: ignore[assignment]
        self._pending: list[bytes] = []
        if type(self.reader) is asyncio.StreamReader:
            ChunkReader.adopt(self.reader)
        _connections(self.context).add(self)
        _watch_termination(self.context)

    async def _read_data(self) -> None:
        """Hypercorn's, reading whole chunks (``ChunkReader``) instead of copies of at most 64 KiB."""
        reader = self.reader
        while not reader.at_eof():
            try:
                read = reader.read_chunk() if isinstance(reader, ChunkReader) else reader.read(_READ_AT_MOST)
                timeout = self.config.read_timeout
                data = await (read if timeout is None else asyncio.wait_for(read, timeout))
            except (ConnectionError, OSError, TimeoutError, SSLError):
                break
            else:
                await self.protocol.handle(RawData(data))
        await self.protocol.handle(Closed())

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData) and len(event.data) < _JOIN_BELOW:
            pending = self._pending
            pending.append(event.data)
            if len(pending) == 1:
                self.loop.call_soon(self.flush)
            if self.writer.transport.get_write_buffer_size() + sum(map(len, pending)) <= _JOIN_BELOW:
                return
            # A client that does not read its answers: written now, and waited for as Hypercorn does.
            self.flush()
            await super().protocol_send(_NOTHING)
            return
        self.flush()
        await super().protocol_send(event)

    def flush(self) -> None:
        """Write what was sent so far in one call: before anything else is sent, closed, or at the end of
        the loop iteration it was sent in."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        try:
            self.writer.write(data)
        except (ConnectionError, RuntimeError):
            _spawn(self.loop, self.protocol.handle(Closed()))

    async def close_idle(self) -> None:
        await asyncio.shield(self._initiate_server_close())

    async def _close(self) -> None:
        try:
            self.flush()
            await super()._close()
        finally:
            self.idle_timer.cancel()
            _connections(self.context).discard(self)


# Per server (one worker context each): its open connections, and the task that closes the idle ones when
# it shuts down. A connection leaves the set when it closes.
_open: weakref.WeakKeyDictionary[WorkerContext, set[LeanTCPServer]] = weakref.WeakKeyDictionary()
_watchers: weakref.WeakKeyDictionary[WorkerContext, asyncio.Task[None]] = weakref.WeakKeyDictionary()
_background: set[asyncio.Task[None]] = set()


def _connections(context: WorkerContext) -> set[LeanTCPServer]:
    connections = _open.get(context)
    if connections is None:
        connections = _open[context] = set()
    return connections


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
        for connection in list(_connections(context)):
            if connection.idle_timer.idle:
                connection.idle_timer.expire()
        _watchers.pop(context, None)

    _watchers[context] = asyncio.get_running_loop().create_task(close_idle_connections())


def install() -> None:
    """Serve every connection of this process's Hypercorn asyncio worker with ``LeanTCPServer``, and its
    HTTP/1.1 with ``LlhttpProtocol`` (services/receiver/http11.py)."""
    hypercorn.asyncio.run.TCPServer = LeanTCPServer  # type: ignore[attr-defined]
    hypercorn.asyncio.tcp_server.ProtocolWrapper = ReceiverProtocolWrapper  # type: ignore[attr-defined]
