"""HTTP/1.1 for Hypercorn with llhttp (``httptools``, the parser uvicorn uses) in place of h11.

h11 parses and frames in pure Python and builds and validates an event object for every request,
chunk and response; per export it cost about a quarter of the receiver's CPU. ``LlhttpProtocol`` stands
in for Hypercorn's ``H11Protocol`` on plain HTTP/1.1 connections and speaks to the rest of Hypercorn
exactly as it does: the same ``HTTPStream`` (ASGI scope, app task, response state), the same events to
the connection (``Updated`` idle or busy, ``RawData``, ``Closed``), and the same bytes on the wire.
What it keeps of h11's behaviour, rule by rule:

- One request at a time: a pipelined request is parsed with the bytes that brought it but not started
  before the previous response has ended and the connection is reusable; until then the connection
  reads nothing more (the back-pressure h11's ``PAUSED`` gives).
- Keep-alive as h11 decides it: not for HTTP/1.0, nor after ``Connection: close`` in the request or
  the response, nor when the response ended before the request body was read whole.
- Responses framed as h11 frames them: a status line with an empty reason, ``Transfer-Encoding:
  chunked`` for an HTTP/1.1 response without a length, ``Connection: close`` added where the
  connection will not be reused, no body for HEAD, 204 and 304.
- ``Expect: 100-continue``: ``100 Continue`` as soon as the request has been handed to the app.
- Malformed input (llhttp's checks; a missing or repeated Host in HTTP/1.1; a head over
  ``h11_max_incomplete_size``): while no response has started, an empty 400 (431 for a head too large,
  501 for a transfer coding other than chunked) with ``Connection: close``; then the connection closes.
- One deliberate difference: a request with both ``Transfer-Encoding`` and ``Content-Length`` is refused
  with that 400 (h11 accepted it, framed by the transfer coding); see ``_refusal_status``.
- A request that asks to change protocol (an ``Upgrade`` header, CONNECT, the HTTP/2 preface) is handed,
  with everything after it, to Hypercorn's own ``H11Protocol``, which serves the rest of the connection
  (WebSocket, h2c and HTTP/2 as before).

tests/unit/receiver/test_serving.py holds both protocols to the same bytes on the wire.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from itertools import chain
from typing import Any, NamedTuple

import httptools
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import (
    Body,
    Data,
    EndBody,
    Request,
    Response,
    StreamClosed,
)
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from hypercorn.typing import AppWrapper, ASGISendEvent, ConnectionState, TaskGroup, WorkerContext
from hypercorn.utils import build_and_validate_headers, suppress_body

STREAM_ID = 1
# The events that never differ, made once (they are frozen).
_BUSY, _IDLE = Updated(idle=False), Updated(idle=True)
_STREAM_CLOSED = StreamClosed(stream_id=STREAM_ID)

# Parsed events waiting their turn; each a tuple whose first item is one of these.
_HEAD, _BODY, _END, _REFUSE, _HAND_OVER = range(5)

_NO_BODY_STATUSES = frozenset({204, 304})
# What h11's field-value rule (``[^\x00\s]`` and inner SP/HTAB) refuses; other control characters (ESC,
# DEL, ...) reach the app, which answers them as it answers any bad value (401 for a bad Authorization).
_H11_REFUSED_IN_VALUE = re.compile(rb"[\x00\n\v\f\r]")
_HANDED_OVER_METHODS = frozenset({b"CONNECT", b"PRI"})


def _refusal_status(parser_error: str) -> int:
    """The status of a request llhttp refused: 501 for a transfer coding it does not serve (as h11), else 400.

    A request with both ``Transfer-Encoding`` and ``Content-Length`` is refused with 400 (h11 framed it by the
    transfer coding and ignored the length). RFC 9112 §6.1 lets a server reject such a request, and §6.3 says
    it ought to be handled as an error: two framings of one body are how requests are smuggled past a proxy
    that reads the other one. Refusing it costs an honest client nothing; none sends both."""
    message = parser_error.lower()
    if "content-length" in message:
        return 400  # "Content-Length can't be present with Transfer-Encoding", and the other way round
    return 501 if "transfer-encoding" in message else 400


class HandOverToH11(Exception):
    """A request this protocol does not serve itself: the rest of the connection goes to ``H11Protocol``."""

    def __init__(self, data: bytes) -> None:
        self.data = data


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing: the request is refused with ``status``."""

    def __init__(self, status: int) -> None:
        self.status = status


class _RequestHead(NamedTuple):
    method: bytes
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]  # names lower-cased, as h11 gives them
    raw_headers: list[tuple[bytes, bytes]]  # as sent (for Hypercorn's h11_pass_raw_headers)
    keep_alive: bool
    expect_continue: bool


def _comma_values(headers: list[tuple[bytes, bytes]], lowered_names: list[bytes], name: bytes) -> list[bytes]:
    """h11's ``get_comma_header``: every value of ``name``, lower-cased, split at commas."""
    values: list[bytes] = []
    for (_, value), found in zip(headers, lowered_names, strict=True):
        if found == name:
            values.extend(part.strip() for part in value.lower().split(b","))
    return [value for value in values if value]


def _set_header(headers: list[tuple[bytes, bytes]], lowered_names: list[bytes], name: bytes,
                values: list[bytes]) -> None:
    """h11's ``set_comma_header``: ``name``'s headers removed, then one (title-cased) per value appended."""
    kept = [(pair, found) for pair, found in zip(headers, lowered_names, strict=True) if found != name]
    headers[:] = [pair for pair, _ in kept]
    lowered_names[:] = [found for _, found in kept]
    title = name.title()
    for value in values:
        headers.append((title, value))
        lowered_names.append(name)


def _head_bytes(status: int, headers: list[tuple[bytes, bytes]], lowered_names: list[bytes]) -> bytes:
    """h11's writer: ``HTTP/1.1 <status> `` (empty reason), Host first, then the rest in order."""
    lines = [b"HTTP/1.1 %d \r\n" % status]
    if b"host" in lowered_names:
        lines.extend(b"%s: %s\r\n" % pair for pair, found in zip(headers, lowered_names, strict=True)
                     if found == b"host")
        lines.extend(b"%s: %s\r\n" % pair for pair, found in zip(headers, lowered_names, strict=True)
                     if found != b"host")
    else:
        lines.extend(b"%s: %s\r\n" % pair for pair in headers)
    lines.append(b"\r\n")
    return b"".join(lines)


class LlhttpProtocol:
    """Hypercorn's ``H11Protocol``, parsing with llhttp and framing responses itself (module docstring)."""

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        task_group: TaskGroup,
        connection_state: ConnectionState,
        ssl: bool,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        send: Callable[[Event], Awaitable[None]],
    ) -> None:
        self.app = app
        self.can_read = context.event_class()
        self.client = client
        self.config = config
        self.context = context
        self.keep_alive_requests = 0
        self.send = send
        self.server = server
        self.ssl = ssl
        self.stream: _Stream | None = None
        self.task_group = task_group
        self.connection_state = connection_state

        self._parser = httptools.HttpRequestParser(self)
        # llhttp refuses every control character in a header value; h11 refuses only NUL and whitespace
        # other than SP and HTAB (``_H11_REFUSED_IN_VALUE``, checked in ``on_header``). Lenient values
        # relax that one check: names, framing (Content-Length, Transfer-Encoding) and line endings stay
        # strict, so a request is framed exactly as before and a value still cannot hide a line break.
        self._parser.set_dangerous_leniencies(lenient_headers=True)
        self._events: deque[tuple[Any, ...]] = deque()
        self._fresh = True  # nothing received yet
        self._closed = False  # Closed sent: nothing more is read or written
        self._stopped = False  # the parser has stopped (an error, or a hand-over): nothing more is parsed
        # The request being parsed.
        self._url = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0  # its head's url and complete header fields, in bytes
        self._head_received = 0  # bytes received after the read in which its head began, while incomplete
        self._in_head = False  # its head begun, not yet complete
        self._in_body = False  # its head taken, its body not yet complete
        self._closing = False  # a request after which the connection closes has been parsed
        # From a request that goes to H11Protocol on: its bytes and all that follow them, rebuilt from
        # what llhttp parsed until llhttp stops (at the end of an upgrade request), then as received.
        self._hand_over: bytearray | None = None
        self._hand_over_chunked = False
        self._raw_hand_over = False
        # The request being served (a cycle: its head taken, until its response ends).
        self._busy = False
        self._method = b"GET"
        self._client_version = "1.1"
        self._keep_alive = True
        self._request_done = False
        self._response_started = False
        self._response_done = False
        self._chunked = False
        self._body_allowed = True

    async def initiate(self) -> None:
        pass

    async def handle(self, event: Event) -> None:
        if isinstance(event, RawData):
            if self._closed:
                return
            data = event.data
            if self._fresh:
                self._fresh = False
                if data.startswith(b"PRI"):  # the HTTP/2 preface: H11Protocol hands over to HTTP/2
                    raise HandOverToH11(data)
            self._feed(data)
            await self._handle_events()
        elif isinstance(event, Closed):
            await self._close_stream()

    # Parsing: everything in the bytes received is parsed at once, into events served in order.

    def _feed(self, data: bytes) -> None:
        if self._raw_hand_over and self._hand_over is not None:
            self._hand_over += data
            return
        if self._stopped:
            return
        if self._closing:
            self._refuse(400, at_once=True)  # h11: data after a request that closes the connection
            return
        if self._in_head:
            # A head still incomplete: these bytes belong to it. httptools holds a header's partial name and
            # value until the header ends (unbounded), so they are counted here as they arrive.
            self._head_received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:  # llhttp stops at the end of an upgrade request
            assert self._hand_over is not None
            self._hand_over += data[upgrade.args[0]:]
            self._raw_hand_over = True
        except httptools.HttpParserError as error:
            cause = error.__context__
            if isinstance(error, httptools.HttpParserCallbackError) and isinstance(cause, _Refused):
                status = cause.status
            else:
                status = _refusal_status(str(error))
            if self._hand_over is not None:
                self._stopped = True
                self._hand_over += b"MALFORMED\r\n\r\n"  # H11Protocol finds it malformed too, and says so
            else:
                self._refuse(status, at_once=self._in_body or self._closing)
        else:
            head_size = max(self._head_size, self._head_received)  # each at most the head's true size
            if self._in_head and head_size > self.config.h11_max_incomplete_size and self._hand_over is None:
                self._refuse(431, at_once=False)  # h11: a head still incomplete past its buffer limit

    def _refuse(self, status: int, *, at_once: bool) -> None:
        """Parse nothing more; refuse with ``status`` right after the events before it (``at_once``: an
        error in the request being served), or when the previous request has ended (a new request's)."""
        self._stopped = True
        self._events.append((_REFUSE, status, not at_once))

    def on_message_begin(self) -> None:
        if self._closing:
            raise _Refused(400)
        self._in_head = True
        self._url = b""
        self._raw_headers = []
        self._head_size = 0
        self._head_received = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a chunked body's trailer: H11Protocol passes none on either
        if _H11_REFUSED_IN_VALUE.search(value) is not None:
            raise _Refused(400)
        self._raw_headers.append((name, value))
        self._head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        method = parser.get_method()
        version = parser.get_http_version()
        headers = [(name.lower(), value.rstrip(b" \t")) for name, value in self._raw_headers]
        names = [name for name, _ in headers]
        if self._hand_over is None and (b"upgrade" in names or method in _HANDED_OVER_METHODS):
            self._hand_over = bytearray()
            self._events.append((_HAND_OVER, self._hand_over))
        if self._hand_over is not None:
            # Rebuilt for H11Protocol, which parses it (and everything after it) again.
            self._hand_over += b"%s %s HTTP/%s\r\n" % (method, self._url, version.encode())
            self._hand_over += b"".join(b"%s: %s\r\n" % pair for pair in self._raw_headers)
            self._hand_over += b"\r\n"
            self._hand_over_chunked = b"chunked" in _comma_values(headers, names, b"transfer-encoding")
            return
        if version == "1.1" and names.count(b"host") != 1:
            raise _Refused(400)  # h11: a missing or repeated Host header
        if b"transfer-encoding" in names and _comma_values(headers, names, b"transfer-encoding") != [b"chunked"]:
            raise _Refused(501)  # h11: any transfer coding but chunked alone (llhttp serves "gzip, chunked")
        connection = _comma_values(headers, names, b"connection") if b"connection" in names else []
        keep_alive = version == "1.1" and b"close" not in connection
        expect_continue = (version == "1.1" and b"expect" in names
                           and b"100-continue" in _comma_values(headers, names, b"expect"))
        self._in_body = True
        self._closing = not keep_alive
        self._events.append((_HEAD, _RequestHead(method, self._url, version, headers, self._raw_headers, keep_alive,
                                                 expect_continue)))

    def on_body(self, body: bytes) -> None:
        if self._hand_over is not None:
            self._hand_over += b"%x\r\n%s\r\n" % (len(body), body) if self._hand_over_chunked else body
            return
        self._events.append((_BODY, body))

    def on_message_complete(self) -> None:
        if self._hand_over is not None:
            if self._hand_over_chunked:
                self._hand_over += b"0\r\n\r\n"
            return
        self._in_body = False
        self._events.append((_END,))

    # Serving the events, one request at a time.

    async def _handle_events(self) -> None:
        events = self._events
        while events and not self._closed:
            event = events[0]
            kind = event[0]
            if kind == _BODY:
                events.popleft()
                if self.stream is not None:
                    await self.stream.receive_body(event[1])
                continue
            if kind == _END:
                events.popleft()
                self._request_done = True
                if self.stream is not None:
                    await self.stream.receive_end()
                continue
            if self._busy and (kind != _REFUSE or event[2]):
                # The next request (or its refusal) waits until this response has ended.
                await self.can_read.clear()
                await self.can_read.wait()
                continue
            events.popleft()
            if kind == _HEAD:
                await self._start_request(event[1])
            elif kind == _REFUSE:
                if not self._response_started:
                    await self._send_error_response(event[1])
                await self._send_closed()
            else:  # _HAND_OVER
                events.clear()
                raise HandOverToH11(bytes(event[1]))

    async def _start_request(self, head: _RequestHead) -> None:
        self._busy = True
        self._method = head.method
        self._client_version = head.version
        self._keep_alive = head.keep_alive
        self._request_done = False
        self._response_started = False
        self._response_done = False
        await self.send(_BUSY)
        self.stream = _Stream(self, self.app, self.config, self.context, self.task_group, self.ssl, self.client,
                              self.server, self.stream_send, STREAM_ID)
        await self.stream.handle(
            Request(
                stream_id=STREAM_ID,
                headers=([(name, value.rstrip(b" \t")) for name, value in head.raw_headers]
                         if self.config.h11_pass_raw_headers else head.headers),
                http_version=head.version,
                method=head.method.decode("ascii").upper(),
                raw_path=head.target,
                state=self.connection_state,
            )
        )
        self.keep_alive_requests += 1
        await self.context.mark_request()
        if head.expect_continue and not self._response_started:
            await self._send_raw(_head_bytes(100, *self._header_lists(self.config.response_headers("h11"))))

    # Responses.

    async def stream_send(self, event: StreamEvent) -> None:
        if isinstance(event, Body):
            await self.send_body(event.data)
        elif isinstance(event, Response):
            await self._send_head(event)
        elif isinstance(event, EndBody):
            await self.end_body()
        elif isinstance(event, StreamClosed):
            await self._maybe_recycle()
        elif isinstance(event, Data):
            await self.send(RawData(data=event.data))
        # InformationalResponse (HTTP/2 only) and EndData: nothing to send, as in H11Protocol

    async def _send_head(self, event: Response) -> None:
        await self.send_head(event.status_code, event.headers)

    async def send_head(self, status: int, response_headers: list[tuple[bytes, bytes]]) -> None:
        """A ``Response`` event's work: the head (or an informational one) as h11 writes it."""
        headers = list(chain(response_headers, self.config.response_headers("h11")))
        if status >= 200:
            if self.keep_alive_requests >= self.config.keep_alive_max_requests:
                headers.append((b"connection", b"close"))
            await self._send_response(status, headers)
        elif not self._response_started:
            await self._send_raw(_head_bytes(status, *self._header_lists(headers)))

    async def send_body(self, data: bytes) -> None:
        """A ``Body`` event's work."""
        if self._body_allowed and data:
            await self._send_raw(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)

    async def end_body(self) -> None:
        """An ``EndBody`` event's work."""
        if self._response_started and not self._response_done:
            if self._chunked:
                await self._send_raw(b"0\r\n\r\n")
            self._response_done = True

    @staticmethod
    def _header_lists(headers: list[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        return headers, [name.lower() for name, _ in headers]

    async def _send_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self._response_started or self._closed:
            return  # h11 refuses a second response; Hypercorn's HTTPStream never sends one
        headers, names = self._header_lists(headers)
        # h11's _clean_up_response_headers_for_sending: the framing decided as for GET when the method is HEAD.
        method = self._method
        no_body = status in _NO_BODY_STATUSES or (method == b"CONNECT" and 200 <= status < 300)
        need_close = False
        if not no_body and not (b"content-length" in names and b"transfer-encoding" not in names) and (
                (b"transfer-encoding" in names and _comma_values(headers, names, b"transfer-encoding"))
                or not _comma_values(headers, names, b"content-length")):  # chunked, or HTTP/1.0 framing
            _set_header(headers, names, b"content-length", [])
            if self._client_version != "1.1":
                _set_header(headers, names, b"transfer-encoding", [])
                need_close = method != b"HEAD"
            else:
                _set_header(headers, names, b"transfer-encoding", [b"chunked"])
        if not self._keep_alive or need_close:
            tokens = set(_comma_values(headers, names, b"connection"))
            tokens.discard(b"keep-alive")
            tokens.add(b"close")
            _set_header(headers, names, b"connection", sorted(tokens))
            self._keep_alive = False
        elif b"connection" in names and b"close" in _comma_values(headers, names, b"connection"):
            self._keep_alive = False
        # The body as h11 writes it, for the real method.
        self._body_allowed = not (no_body or method == b"HEAD")
        self._chunked = (self._body_allowed and b"transfer-encoding" in names
                         and bool(_comma_values(headers, names, b"transfer-encoding")))
        self._response_started = True
        await self._send_raw(_head_bytes(status, headers, names))

    async def _send_error_response(self, status: int) -> None:
        headers = [(b"content-length", b"0"), (b"connection", b"close"), *self.config.response_headers("h11")]
        await self._send_response(status, headers)
        self._response_done = True

    async def _send_raw(self, data: bytes) -> None:
        if not self._closed:
            await self.send(RawData(data=data))

    async def _send_closed(self) -> None:
        self._closed = True
        self._events.clear()
        await self.send(Closed())

    async def _maybe_recycle(self) -> None:
        await self._close_stream()
        if (
            not self.context.terminated.is_set()
            and self._response_done
            and self._request_done
            and self._keep_alive
            and not self._closed
        ):
            self._busy = False
            self._response_started = False
            self._response_done = False
            await self.can_read.set()
            await self.send(_IDLE)
        else:
            await self.can_read.set()
            if not self._closed:
                await self._send_closed()

    async def _close_stream(self) -> None:
        if self.stream is not None:
            await self.stream.handle(_STREAM_CLOSED)
            self.stream = None


class _Stream(HTTPStream):
    """Hypercorn's ``HTTPStream``, its common messages passed to and from ``LlhttpProtocol`` by direct calls.

    A request's body and end, an answer's start, its body and its end: each was an event object and a
    type dispatch on the way (four to seven per request). What is done with them is ``HTTPStream``'s own,
    line for line; every other message (trailers, push, early hints, a message out of order) goes through
    ``HTTPStream`` as before.
    """

    def __init__(self, protocol: LlhttpProtocol, *args: Any) -> None:
        super().__init__(*args)
        self.protocol = protocol

    async def receive_body(self, data: bytes) -> None:
        if not self.closed:
            await self.app_put({"type": "http.request", "body": bytes(data), "more_body": True})

    async def receive_end(self) -> None:
        if not self.closed:
            await self.app_put({"type": "http.request", "body": b"", "more_body": False})

    async def app_send(self, message: ASGISendEvent | None) -> None:
        if message is not None:
            if message["type"] == "http.response.start" and self.state == ASGIHTTPState.REQUEST:
                self.response = message
                headers = build_and_validate_headers(message.get("headers", []))
                await self.protocol.send_head(int(message["status"]), headers)
                self.state = ASGIHTTPState.RESPONSE
                return
            if message["type"] == "http.response.body" and self.state == ASGIHTTPState.RESPONSE:
                body = message.get("body", b"")
                if not suppress_body(self.scope["method"], int(self.response["status"])) and body != b"":
                    await self.protocol.send_body(bytes(body))
                if not message.get("more_body", False):
                    if self.response.get("trailers", False):
                        self.state = ASGIHTTPState.TRAILERS
                    else:
                        await self._send_closed()
                return
        await super().app_send(message)

    async def _send_closed(self) -> None:
        await self.protocol.end_body()
        self.state = ASGIHTTPState.CLOSED
        await self.config.log.access(self.scope, self.response, time.time() - self.start_time)
        await self.protocol.stream_send(_STREAM_CLOSED)


class ReceiverProtocolWrapper(ProtocolWrapper):
    """Hypercorn's protocol choice, with ``LlhttpProtocol`` for HTTP/1.1 until a request hands over."""

    def __init__(self, app: AppWrapper, config: Config, context: WorkerContext, task_group: TaskGroup,
                 state: ConnectionState, ssl: bool, client: tuple[str, int] | None,
                 server: tuple[str, int] | None, send: Callable[[Event], Awaitable[None]],
                 alpn_protocol: str | None = None) -> None:
        super().__init__(app, config, context, task_group, state, ssl, client, server, send, alpn_protocol)
        if isinstance(self.protocol, H11Protocol):
            self.protocol = LlhttpProtocol(  # type: ignore[assignment]
                app, config, context, task_group, state, ssl, client, server, send)

    async def handle(self, event: Event) -> None:
        try:
            await super().handle(event)
        except HandOverToH11 as hand_over:
            served = self.protocol
            assert isinstance(served, LlhttpProtocol)
            self.protocol = H11Protocol(self.app, self.config, self.context, self.task_group, self.state,
                                        self.ssl, self.client, self.server, self.send)
            self.protocol.keep_alive_requests = served.keep_alive_requests
            await super().handle(RawData(data=hand_over.data))
