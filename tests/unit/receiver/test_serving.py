"""The receiver's Hypercorn (services/receiver/serving.py) still speaks HTTP/1.1 as Hypercorn does.

A real server on a loopback port, an ASGI app that reads the whole body and answers its length, and raw
sockets, so every byte on the wire is what a client sees: keep-alive, pipelining, chunked bodies,
``Expect: 100-continue``, the Date header, malformed requests, and the idle timeout, both on its own and
when the server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypercorn.asyncio import serve

from deploy.local.infra import free_port
from services.receiver import serving
from services.receiver.__main__ import hypercorn_config
from services.receiver.settings import ReceiverSettings
from tests.unit.receiver.servers import read_body_size, wait_until_listening


async def echo_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    size = await read_body_size(receive)
    body = str(size).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]}
    )
    await send({"type": "http.response.body", "body": body})


class Server:
    def __init__(self, port: int, stop: asyncio.Event, task: asyncio.Task[None]) -> None:
        self.port, self.stop, self.task = port, stop, task

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@contextlib.asynccontextmanager
async def running(keep_alive_timeout: float = 75) -> AsyncIterator[Server]:
    port = free_port()
    config = hypercorn_config(ReceiverSettings(receiver_host="127.0.0.1", receiver_port=port))
    config.keep_alive_timeout = keep_alive_timeout
    config.graceful_timeout = 5
    stop = asyncio.Event()
    task = asyncio.create_task(serve(echo_length, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    await wait_until_listening(port)
    server = Server(port, stop, task)
    try:
        yield server
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head[:-4].split(b"\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(b":") for line in lines)}
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return int(status_line.split()[1]), headers, body


def post(body: bytes, extra: str = "") -> bytes:
    return f"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_the_receiver_config_serves_with_the_lean_connection() -> None:
    import hypercorn.asyncio.run  # noqa: PLC0415

    hypercorn_config(ReceiverSettings())
    assert hypercorn.asyncio.run.TCPServer is serving.LeanTCPServer  # type: ignore[attr-defined]


async def test_keep_alive_answers_every_request_on_one_connection_with_a_date() -> None:
    async with running() as server:
        reader, writer = await server.connect()
        for size in (0, 10, 70_000, 3):
            writer.write(post(b"x" * size))
            status, headers, body = await read_response(reader)
            assert (status, body) == (200, str(size).encode())
            date = email.utils.parsedate_to_datetime(headers[b"date"].decode())
            assert date.tzinfo is not None
        writer.close()


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with running() as server:
        reader, writer = await server.connect()
        writer.write(post(b"a") + post(b"bb") + post(b"ccc"))
        answers = [await read_response(reader) for _ in range(3)]
        assert [body for _, _, body in answers] == [b"1", b"2", b"3"]
        writer.close()


async def test_chunked_bodies_and_expect_100_continue() -> None:
    async with running() as server:
        reader, writer = await server.connect()
        writer.write(
            b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        assert (await read_response(reader))[2] == b"11"
        writer.write(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 100")
        writer.write(b"body")
        assert (await read_response(reader))[:3:2] == (200, b"4")
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_a_malformed_request_is_a_4xx_and_the_server_carries_on(request_bytes: bytes) -> None:
    async with running() as server:
        reader, writer = await server.connect()
        writer.write(request_bytes)
        status, _, _ = await read_response(reader)
        assert 400 <= status < 500
        writer.close()
        reader, writer = await server.connect()
        writer.write(post(b"ok"))
        assert (await read_response(reader))[2] == b"2"
        writer.close()


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout_and_not_before() -> None:
    async with running(keep_alive_timeout=0.5) as server:
        reader, writer = await server.connect()
        for _ in range(3):  # each request restarts the timeout
            await asyncio.sleep(0.3)
            writer.write(post(b"x"))
            assert (await read_response(reader))[0] == 200
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        assert 0.4 <= asyncio.get_running_loop().time() - started < 2
        writer.close()


async def test_shutdown_closes_idle_connections_at_once_and_busy_ones_after_their_answer() -> None:
    async with running() as server:
        idle_reader, idle_writer = await server.connect()
        idle_writer.write(post(b"x"))
        await read_response(idle_reader)
        never_used_reader, never_used_writer = await server.connect()
        busy_reader, busy_writer = await server.connect()
        busy_writer.write(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbo")
        await asyncio.sleep(0.1)
        server.stop.set()
        assert await asyncio.wait_for(idle_reader.read(), 2) == b""
        assert await asyncio.wait_for(never_used_reader.read(), 2) == b""
        busy_writer.write(b"dy")
        status, _, body = await read_response(busy_reader)
        assert (status, body) == (200, b"4")
        assert await asyncio.wait_for(busy_reader.read(), 2) == b""
        await asyncio.wait_for(server.task, 5)
        for writer in (idle_writer, never_used_writer, busy_writer):
            writer.close()


async def test_many_pipelined_requests_and_large_bodies_arrive_whole_and_in_order() -> None:
    async with running() as server:
        reader, writer = await server.connect()
        writer.write(b"".join(post(b"y" * (index % 7)) for index in range(2_000)) + post(b"z" * 300_000))
        for index in range(2_000):
            assert (await read_response(reader))[2] == str(index % 7).encode()
        assert (await read_response(reader))[2] == b"300000"
        writer.close()


class _Transport:
    def __init__(self, buffered: int) -> None:
        self.buffered = buffered

    def get_write_buffer_size(self) -> int:
        return self.buffered


class _Writer:
    def __init__(self, buffered: int) -> None:
        self.transport = _Transport(buffered)
        self.writes: list[bytes] = []
        self.drains = 0

    def write(self, data: bytes) -> None:
        if data:  # as transports do: an empty write is nothing
            self.writes.append(bytes(data))

    async def drain(self) -> None:
        self.drains += 1


def lean_connection(writer: _Writer) -> serving.LeanTCPServer:
    connection = serving.LeanTCPServer.__new__(serving.LeanTCPServer)
    connection.writer = writer  # type: ignore[assignment]
    connection.loop = asyncio.get_running_loop()
    connection.send_lock = asyncio.Lock()
    connection._pending = []
    return connection


async def test_small_writes_of_one_iteration_go_out_as_one() -> None:
    from hypercorn.events import RawData  # noqa: PLC0415

    writer = _Writer(buffered=0)
    connection = lean_connection(writer)
    await connection.protocol_send(RawData(b"HTTP/1.1 200 OK\r\n\r\n"))
    await connection.protocol_send(RawData(b"body"))
    assert writer.writes == []
    await asyncio.sleep(0)
    assert writer.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]


async def test_a_client_that_does_not_read_gets_back_pressure_and_nothing_twice() -> None:
    from hypercorn.events import RawData  # noqa: PLC0415

    writer = _Writer(buffered=64 * 1024)
    connection = lean_connection(writer)
    await connection.protocol_send(RawData(b"answer"))
    assert (writer.writes, writer.drains) == ([b"answer"], 1)
    await connection.protocol_send(RawData(b"x" * 70_000))  # large: written and drained at once
    await asyncio.sleep(0)
    assert (writer.writes, writer.drains) == ([b"answer", b"x" * 70_000], 2)


class _ReadingTransport:
    """Records what the reader asks of the transport: pause and resume of reading."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


async def test_the_chunk_reader_hands_over_what_arrived_uncopied_with_the_stream_readers_flow_control() -> None:
    reader = asyncio.StreamReader(limit=10)
    transport = _ReadingTransport()
    reader.set_transport(transport)  # type: ignore[arg-type]
    reader.feed_data(b"before")  # arrived before the connection was served: kept, first
    serving.ChunkReader.adopt(reader)
    assert isinstance(reader, serving.ChunkReader)
    first, second = b"a" * 8, b"b" * 8
    reader.feed_data(first)
    assert transport.calls == []
    reader.feed_data(second)  # 22 bytes held, over twice the limit
    assert transport.calls == ["pause"]
    assert await reader.read_chunk() == b"before"
    assert await reader.read_chunk() is first  # handed over as it arrived
    assert transport.calls == ["pause", "resume"]  # back down to the limit
    assert await reader.read(3) == b"bbb" and await reader.read(0) == b""  # read(n): at most n bytes
    assert await reader.read(100) == b"b" * 5
    pending = asyncio.ensure_future(reader.read_chunk())
    await asyncio.sleep(0)
    assert not pending.done()
    reader.feed_data(b"late")
    assert await pending == b"late"
    reader.feed_eof()
    assert reader.at_eof() and await reader.read_chunk() == b""


async def test_the_chunk_reader_raises_what_the_connection_failed_with() -> None:
    reader = asyncio.StreamReader()
    serving.ChunkReader.adopt(reader)
    assert isinstance(reader, serving.ChunkReader)
    waiting = asyncio.ensure_future(reader.read_chunk())
    await asyncio.sleep(0)
    reader.set_exception(ConnectionResetError())
    with pytest.raises(ConnectionResetError):
        await waiting
