"""A lean HTTP/1.1 keep-alive load generator for the receiver benchmark, run as its own process.

Usage: python -m tests.bench.http_load CONFIG.json RESULT.json

The requests are built once as raw bytes; each connection writes one, reads the answer (status line,
headers, Content-Length body) and goes on, so the generator spends a few tens of microseconds per
request and leaves the CPU to the receiver. Two modes:

- closed loop (``rate`` 0): every connection sends its next request as soon as the last is answered;
  this finds the maximum throughput.
- open loop (``rate`` > 0): requests are due at a fixed rate whether or not earlier ones were answered;
  latency is measured from when a request was due, so a stall is not hidden (no coordinated omission).
  Requests that find every connection busy for too long are counted as ``client_backlog_dropped``.

A connection answered 429 or 503 waits for its Retry-After before sending again, as OTLP exporters do
(``honour_retry_after``); the requests due meanwhile go to other connections or count as dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ConfigT = TypeVar("ConfigT")


@dataclass
class Config:
    host: str
    port: int
    path: str
    bodies: list[str]  # files holding protobuf bodies
    records_per_body: int
    authorizations: list[str]  # one Authorization header value per tenant
    connections: int
    duration: float
    warmup: float
    rate: float = 0.0  # requests per second; 0 = closed loop
    honour_retry_after: bool = True
    content_type: str = "application/x-protobuf"
    content_encoding: str | None = None  # the body files are already encoded so (gzip)


@dataclass
class Tally:
    measuring_from: float
    measuring_until: float
    statuses: dict[str, int] = field(default_factory=dict)
    latencies_ok: list[float] = field(default_factory=list)
    latencies_all: list[float] = field(default_factory=list)
    connection_errors: int = 0
    client_backlog_dropped: int = 0
    answered_200_total: int = 0  # warm-up included: what must be in the topic afterwards

    def record(self, due: float, done: float, status: int) -> None:
        if status == 200:
            self.answered_200_total += 1
        if not self.measuring_from <= done < self.measuring_until:
            return
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        self.latencies_all.append(done - due)
        if status == 200:
            self.latencies_ok.append(done - due)


def _requests(config: Config) -> list[bytes]:
    built = []
    for index, path in enumerate(config.bodies):
        body = Path(path).read_bytes()
        authorization = config.authorizations[index % len(config.authorizations)]
        head = (
            f"POST {config.path} HTTP/1.1\r\nHost: {config.host}:{config.port}\r\n"
            f"Content-Type: {config.content_type}\r\nAuthorization: {authorization}\r\n"
            + (f"Content-Encoding: {config.content_encoding}\r\n" if config.content_encoding else "")
            + f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        built.append(head + body)
    return built


@dataclass
class Answer:
    status: int
    close: bool
    retry_after: float


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> Answer:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    answer = Answer(int(lines[0].split(b" ", 2)[1]), False, 0.0)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            answer.close = True
        elif name == b"retry-after":
            answer.retry_after = float(value)
    if length:
        await reader.readexactly(length)
    return answer


async def _connection(config: Config, requests: list[bytes], offset: int, tally: Tally,
                      tickets: asyncio.Queue[float] | None, stop_at: float) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    index = offset
    while time.perf_counter() < stop_at:
        if tickets is None:
            due = time.perf_counter()
        else:
            try:
                due = await asyncio.wait_for(tickets.get(), timeout=max(0.01, stop_at - time.perf_counter()))
            except TimeoutError:
                break
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(config.host, config.port)
            assert reader is not None
            answer = await _exchange(reader, writer, requests[index % len(requests)])
        except (OSError, asyncio.IncompleteReadError, ValueError):
            tally.connection_errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
            continue
        index += 1
        tally.record(due, time.perf_counter(), answer.status)
        if answer.close:
            writer.close()
            reader = writer = None
        if answer.retry_after and config.honour_retry_after:
            # As OTLP exporters do (and the specification asks): this connection waits before sending again.
            await asyncio.sleep(min(answer.retry_after, max(0.0, stop_at - time.perf_counter())))
    if writer is not None:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _pace(rate: float, tickets: asyncio.Queue[float], stop_at: float, tally: Tally, backlog_limit: int) -> None:
    start = time.perf_counter()
    issued = 0
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            return
        due_count = int((now - start) * rate) - issued
        for _ in range(due_count):
            due = start + issued / rate
            issued += 1
            if tickets.qsize() >= backlog_limit:
                if tally.measuring_from <= now < tally.measuring_until:
                    tally.client_backlog_dropped += 1
                continue
            tickets.put_nowait(due)
        await asyncio.sleep(0.001)


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(config: Config) -> dict[str, Any]:
    requests = _requests(config)
    start = time.perf_counter()
    tally = Tally(start + config.warmup, start + config.warmup + config.duration)
    stop_at = tally.measuring_until
    tickets: asyncio.Queue[float] | None = asyncio.Queue() if config.rate else None
    tasks = [
        asyncio.create_task(_connection(config, requests, i * 7, tally, tickets, stop_at))
        for i in range(config.connections)
    ]
    if tickets is not None:
        tasks.append(asyncio.create_task(_pace(config.rate, tickets, stop_at, tally, config.connections * 2)))
    await asyncio.gather(*tasks)
    ok = tally.statuses.get("200", 0)
    return {
        "mode": "open loop" if config.rate else "closed loop",
        "offered_requests_per_second": config.rate or None,
        "connections": config.connections,
        "measured_seconds": config.duration,
        "statuses": tally.statuses,
        "answered_200_records": tally.answered_200_total * config.records_per_body,
        "accepted_records_per_second": ok * config.records_per_body / config.duration,
        "requests_per_second": sum(tally.statuses.values()) / config.duration,
        "latency_ok_ms": {
            "p50": _ms(_percentile(tally.latencies_ok, 0.50)),
            "p90": _ms(_percentile(tally.latencies_ok, 0.90)),
            "p99": _ms(_percentile(tally.latencies_ok, 0.99)),
            "max": _ms(max(tally.latencies_ok, default=None)),
        },
        "latency_all_ms": {
            "p50": _ms(_percentile(tally.latencies_all, 0.50)),
            "p99": _ms(_percentile(tally.latencies_all, 0.99)),
        },
        "connection_errors": tally.connection_errors,
        "client_backlog_dropped": tally.client_backlog_dropped,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def run_load_client(config_type: Callable[..., ConfigT], run: Callable[[ConfigT], Coroutine[Any, Any, dict[str, Any]]]) -> None:
    """A load client process's entry: its config from the JSON file named first on the command line, its result
    to the file named second; on uvloop when installed, which leaves more of the CPU to the services measured."""
    config = config_type(**json.loads(Path(sys.argv[1]).read_text()))
    try:
        import uvloop  # noqa: PLC0415

        result = uvloop.run(run(config))
    except ImportError:
        result = asyncio.run(run(config))
    Path(sys.argv[2]).write_text(json.dumps(result))


def main() -> None:
    run_load_client(Config, run)


if __name__ == "__main__":
    main()
