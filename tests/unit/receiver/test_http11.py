"""The receiver's HTTP/1.1 (services/receiver/http11.py, llhttp) puts on the wire what Hypercorn's h11 does.

Each case is raw bytes sent to a real server twice, once with Hypercorn's own ``H11Protocol`` and once
with ``LlhttpProtocol``; everything the server sends back until it closes the connection (or falls
silent) must be the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import hypercorn.asyncio.tcp_server
import pytest
from hypercorn.asyncio import serve
from hypercorn.protocol import ProtocolWrapper

from deploy.local.infra import free_port
from services.receiver import http11
from services.receiver.__main__ import hypercorn_config
from services.receiver.settings import ReceiverSettings
from tests.unit.receiver.servers import read_body_size, wait_until_listening


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers by path: the body's length, a streamed answer (no length), 204, or 401 without reading."""
    if scope["type"] != "http":
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})
        return
    path = scope["path"]
    if path == "/early":
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"6")]})
        await send({"type": "http.response.body", "body": b"denied"})
        return
    size = await read_body_size(receive)
    body = f"{scope['method']} {scope['path']} {size} {scope['http_version']}".encode()
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-kind", b"stream")]})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        await send({"type": "http.response.body", "body": b"-end"})
    elif path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/close":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
    else:
        headers = [(b"content-length", str(len(body)).encode()), (b"x-headers", repr(scope["headers"]).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def running(wrapper: type[ProtocolWrapper], *, pass_raw_headers: bool = False) -> AsyncIterator[int]:
    port = free_port()
    config = hypercorn_config(ReceiverSettings(receiver_host="127.0.0.1", receiver_port=port))
    config.graceful_timeout = 2
    config.h11_pass_raw_headers = pass_raw_headers
    # One Date for every answer, so answers compare whole (HTTP/2 ones carry it compressed).
    setattr(config, "response_headers", lambda protocol: [(b"date", b"Sat, 05 Dec 2026 07:00:00 GMT")])  # noqa: B010
    chosen = getattr(hypercorn.asyncio.tcp_server, "ProtocolWrapper")  # noqa: B009 - not exported
    setattr(hypercorn.asyncio.tcp_server, "ProtocolWrapper", wrapper)  # noqa: B010
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        await wait_until_listening(port)
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        setattr(hypercorn.asyncio.tcp_server, "ProtocolWrapper", chosen)  # noqa: B010


async def exchange(port: int, parts: list[bytes]) -> bytes:
    """Sends the parts (letting the server answer between them); returns all it sent back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    for part in parts:
        try:
            writer.write(part)
            await writer.drain()
        except ConnectionError:
            break  # the server answered and closed before this part
        with contextlib.suppress(TimeoutError):
            while chunk := await asyncio.wait_for(reader.read(65536), 0.3):
                received += chunk
    writer.close()
    return bytes(received)


def post(path: str, body: bytes, extra: str = "", version: str = "1.1") -> bytes:
    return f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


CHUNKED = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
CASES: dict[str, list[bytes]] = {
    "keep-alive": [post("/v1/logs", b"abc"), post("/v1/logs", b""), post("/v1/logs", b"x" * 70_000)],
    "pipelined": [post("/v1/logs", b"a") + post("/stream", b"bb") + post("/empty", b"") + post("/v1/logs", b"c")],
    "pipelined, then close": [post("/v1/logs", b"a", "Connection: close\r\n") + post("/v1/logs", b"b")],
    "chunked": [CHUNKED + CHUNKED],
    "chunked with a trailer": [b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n" + post("/v1/logs", b"d")],
    "chunked in pieces": [CHUNKED[:50], CHUNKED[50:70], CHUNKED[70:]],
    "expect 100-continue": [post("/v1/logs", b"", "Expect: 100-continue\r\n")[:-0 or None].replace(
        b"Content-Length: 0", b"Content-Length: 4"), b"body"],
    "expect, body at once": [post("/v1/logs", b"body", "Expect: 100-continue\r\n")],
    "streamed answer": [post("/stream", b"xyz")],
    "streamed answer to HTTP/1.0": [post("/stream", b"xyz", version="1.0")],
    "HTTP/1.0": [post("/v1/logs", b"q", version="1.0")],
    "HTTP/1.0 keep-alive": [post("/v1/logs", b"q", "Connection: keep-alive\r\n", version="1.0")],
    "HTTP/1.0 no host": [b"GET / HTTP/1.0\r\n\r\n"],
    "connection close": [post("/v1/logs", b"q", "Connection: close\r\n")],
    "answer closes": [post("/close", b"q"), post("/v1/logs", b"r")],
    "HEAD": [b"HEAD /v1/logs HTTP/1.1\r\nHost: x\r\n\r\n", b"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n"],
    "GET, headers as the app sees them": [b"GET /x?y=1 HTTP/1.1\r\nhost: h\r\nX-A:  v \r\nX-A: w\r\n\r\n"],
    "early answer, body unread": [post("/early", b"x" * 100_000)],
    "early answer, body read": [post("/early", b"abc"), post("/v1/logs", b"d")],
    "no host": [b"GET / HTTP/1.1\r\n\r\n"],
    "two hosts": [b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"],
    "garbage": [b"NOT HTTP AT ALL\r\n\r\n"],
    "control characters h11 lets through": [b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x1b\r\n"
                                            b"X-A: a\x01\x7fb\r\n\r\n"],
    "NUL in a header value": [b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"],
    "vertical tab in a header value": [b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x0bb\r\n\r\n"],
    "form feed in a header value": [b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x0cb\r\n\r\n"],
    "bare CR in a header value": [b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n"],
    "folded header value": [b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"],
    "bad content-length": [b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"],
    "bad chunk": [b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
    "gzip transfer coding": [b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"],
    "gzip, then chunked transfer coding": [b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                                           b"0\r\n\r\n"],
    "chunked twice": [b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"0\r\n\r\n"],
    "head too large": [b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n"],
    "a header that never ends": [b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ", *[b"e" * 10_000] * 3],
    "a head in many small pieces": [b"GET / HTTP/1.1\r\nHost: x\r\n", *[b"X-A: " + b"a" * 3_000 + b"\r\n"] * 3,
                                    b"\r\n"],
    "good, then garbage": [post("/v1/logs", b"a") + b"GARBAGE\r\n\r\n"],
    "websocket": [b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"],
    "a request, then websocket": [post("/v1/logs", b"a") + b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                  b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  b"Sec-WebSocket-Version: 13\r\n\r\n"],
    "unknown upgrade with a body": [post("/v1/logs", b"abc", "Upgrade: foo\r\n") + post("/v1/logs", b"d")],
    "h2c upgrade": [b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                    b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"],
    "HTTP/2 preface": [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"],
}


@pytest.mark.parametrize("name", list(CASES))
async def test_the_same_bytes_as_h11(name: str) -> None:
    async with running(ProtocolWrapper) as port:
        expected = await exchange(port, CASES[name])
    async with running(http11.ReceiverProtocolWrapper) as port:
        actual = await exchange(port, CASES[name])
    assert expected  # every case gets an answer
    assert actual == expected


async def test_raw_header_names_when_hypercorn_is_configured_to_pass_them() -> None:
    request = [b"GET /x HTTP/1.1\r\nHost: h\r\nX-Mixed-Case:  v \r\n\r\n"]
    async with running(ProtocolWrapper, pass_raw_headers=True) as port:
        expected = await exchange(port, request)
    async with running(http11.ReceiverProtocolWrapper, pass_raw_headers=True) as port:
        actual = await exchange(port, request)
    assert b"X-Mixed-Case" in expected
    assert actual == expected


async def test_the_receiver_serves_http11_with_llhttp() -> None:
    hypercorn_config(ReceiverSettings())
    assert getattr(hypercorn.asyncio.tcp_server, "ProtocolWrapper") is http11.ReceiverProtocolWrapper  # noqa: B009


SMUGGLING = {
    "length first": b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
    "coding first": b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
}


@pytest.mark.parametrize("name", list(SMUGGLING))
async def test_a_request_with_both_a_length_and_a_transfer_coding_is_refused_and_the_connection_closed(
        name: str) -> None:
    """h11 framed such a request by its transfer coding and ignored the length; the receiver refuses it with 400
    (RFC 9112 6.1 allows it; 6.3: two framings of one body are how requests are smuggled). Nothing is served,
    not even a good request pipelined after it."""
    request = SMUGGLING[name] + b"0\r\n\r\n" + post("/v1/logs", b"next")
    async with running(http11.ReceiverProtocolWrapper) as port:
        answer = await exchange(port, [request])
    assert answer == (b"HTTP/1.1 400 \r\ncontent-length: 0\r\nconnection: close\r\n"
                      b"date: Sat, 05 Dec 2026 07:00:00 GMT\r\n\r\n")
