"""Open-loop OTLP/HTTP log load that retries like an OTLP exporter, run as its own process.

Usage: python -m tests.bench.exporter_load CONFIG.json RESULT.json

Requests (Claude Code-shaped protobuf batches, tenants in turn) fall due at a fixed event rate whether or
not earlier ones were answered. A request answered 429, 502, 503 or 504, or whose connection failed, is sent
again after an exponential backoff with jitter (at least the Retry-After the server asked for), as the
OTLP/HTTP specification asks of exporters; any other status is final. Nothing is given up while the run and
its drain time last, so every event the pipeline loses is the pipeline's loss.

The result lists, per request: its session id (one per batch), tenant, when it first fell due, when it was
accepted (or null) and how many attempts it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.http_load import _exchange, run_load_client
from tests.bench.payloads import build_batches, session_id

RETRYABLE = {429, 502, 503, 504}


@dataclass
class LoadConfig:
    host: str
    port: int
    fixtures: str
    authorizations: list[str]
    events_per_second: float
    duration: float
    records_per_request: int = 50
    first_session: int = 0
    connections: int = 32
    drain_timeout: float = 90.0
    initial_backoff: float = 1.0
    max_backoff: float = 5.0
    # When set, the client writes the wall-clock time its first request falls due to this file: building the
    # batches takes seconds on a loaded machine, and a caller timing faults against the load needs the real start.
    started_file: str = ""


@dataclass
class Sent:
    session_id: str
    tenant: int
    records: int
    due: float
    accepted: float | None = None
    attempts: int = 0
    final_status: int | None = None


@dataclass
class Tally:
    statuses: dict[str, int] = field(default_factory=dict)
    connection_errors: int = 0


def _request(config: LoadConfig, body: bytes, authorization: str) -> bytes:
    head = (
        f"POST /v1/logs HTTP/1.1\r\nHost: {config.host}:{config.port}\r\n"
        f"Content-Type: application/x-protobuf\r\nAuthorization: {authorization}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _connection(config: LoadConfig, queue: asyncio.Queue[tuple[Sent, bytes]], tally: Tally,
                      outstanding: set[str], rng: random.Random) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    loop = asyncio.get_running_loop()

    def retry_later(sent: Sent, request: bytes, at_least: float) -> None:
        backoff = min(config.max_backoff, config.initial_backoff * 1.5 ** max(0, sent.attempts - 1))
        delay = max(at_least, rng.uniform(backoff / 2, backoff))
        loop.call_later(delay, queue.put_nowait, (sent, request))

    while True:
        sent, request = await queue.get()
        sent.attempts += 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(config.host, config.port)
            assert reader is not None
            answer = await _exchange(reader, writer, request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            tally.connection_errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            retry_later(sent, request, 0.0)
            continue
        tally.statuses[str(answer.status)] = tally.statuses.get(str(answer.status), 0) + 1
        if answer.close:
            writer.close()
            reader = writer = None
        if answer.status == 200:
            sent.accepted = time.time()
            sent.final_status = 200
            outstanding.discard(sent.session_id)
        elif answer.status in RETRYABLE:
            retry_later(sent, request, answer.retry_after)
        else:
            sent.final_status = answer.status
            outstanding.discard(sent.session_id)


async def run(config: LoadConfig) -> dict[str, Any]:
    count = max(1, round(config.events_per_second * config.duration / config.records_per_request))
    batches = build_batches(Path(config.fixtures), count=count, records_per_batch=config.records_per_request,
                            first_session=config.first_session)
    requests = [
        _request(config, batch.body, config.authorizations[index % len(config.authorizations)])
        for index, batch in enumerate(batches)
    ]
    queue: asyncio.Queue[tuple[Sent, bytes]] = asyncio.Queue()
    tally = Tally()
    outstanding: set[str] = set()
    rng = random.Random(config.first_session)
    workers = [asyncio.create_task(_connection(config, queue, tally, outstanding, rng))
               for _ in range(config.connections)]
    interval = config.records_per_request / config.events_per_second
    sent_list: list[Sent] = []
    start = time.time()
    if config.started_file:
        Path(config.started_file).write_text(repr(start))  # noqa: ASYNC240 - a few bytes, before the first request
    for index, request in enumerate(requests):
        due = start + index * interval
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = Sent(session_id(config.first_session + index), index % len(config.authorizations),
                    config.records_per_request, due)
        sent_list.append(sent)
        outstanding.add(sent.session_id)
        queue.put_nowait((sent, request))
    offered_until = time.time()
    deadline = offered_until + config.drain_timeout
    while outstanding and time.time() < deadline:
        await asyncio.sleep(0.05)
    for worker in workers:
        worker.cancel()
    for worker in workers:
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    return {
        "started": start,
        "offered_until": offered_until,
        "statuses": tally.statuses,
        "connection_errors": tally.connection_errors,
        "given_up": len(outstanding),
        "requests": [asdict(s) for s in sent_list],
    }


def main() -> None:
    run_load_client(LoadConfig, run)


if __name__ == "__main__":
    main()
