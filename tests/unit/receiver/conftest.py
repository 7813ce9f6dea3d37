"""Fakes for the receiver's seams (producer, clock) and an app running its lifespan, without a broker."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError
from prometheus_client import generate_latest
from starlette.applications import Starlette

from services.receiver.app import create_app
from services.receiver.settings import ReceiverSettings
from shared.keys import Ed25519Signer
from shared.licensing import LicenseVerifier, issue_license

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.wall = NOW
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


@dataclass
class Sent:
    topic: str
    value: bytes
    key: bytes | None
    headers: dict[str, str]


@dataclass
class FakeProducer:
    """Acknowledges at once by default; ``mode`` makes it fail, hang or refuse like a broker in trouble."""

    mode: str = "ack"  # ack | fail | hang | raise
    sent: list[Sent] = field(default_factory=list)
    pending: list[asyncio.Future[Any]] = field(default_factory=list)
    started: bool = False
    stopped: bool = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        if self.mode == "raise":
            raise KafkaConnectionError("broker gone")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.mode == "ack":
            self.sent.append(Sent(topic, value, key, {k: v.decode() for k, v in headers or []}))
            future.set_result(None)
        elif self.mode == "fail":
            future.set_exception(KafkaConnectionError("broker gone"))
        else:
            self.pending.append(future)
        return future


@dataclass
class Harness:
    app: Starlette
    client: httpx.AsyncClient
    producer: FakeProducer
    clock: FakeClock
    issuer: Ed25519Signer
    verifier: LicenseVerifier
    settings: ReceiverSettings

    def licence(self, org: str = "acme", tenant: str | None = "tenant-acme", **kwargs: Any) -> tuple[Any, str]:
        return issue_license(self.issuer, org_id=org, tenant_id=tenant, now=NOW - timedelta(days=1), **kwargs)

    def auth(self, org: str = "acme", tenant: str | None = "tenant-acme", **kwargs: Any) -> dict[str, str]:
        _, token = self.licence(org, tenant, **kwargs)
        return {"Authorization": basic(org, token)}

    def metrics_text(self) -> str:
        """What the receiver's metrics port serves (the OTLP port does not serve metrics)."""
        return generate_latest(self.app.state.receiver.registry).decode()

    async def post(self, body: bytes, *, content_type: str = "application/x-protobuf", path: str = "/v1/logs",
                   headers: dict[str, str] | None = None, auth: dict[str, str] | None = None) -> httpx.Response:
        return await self.client.post(path, content=body, headers={
            "Content-Type": content_type, **(self.auth() if auth is None else auth), **(headers or {})})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@asynccontextmanager
async def lifespan_of(app: Starlette) -> AsyncIterator[None]:
    """Drive the ASGI lifespan protocol, as Hypercorn does."""
    to_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                   to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    assert (await from_app.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await task


HarnessFactory = Callable[..., Any]


@pytest.fixture
async def make_harness() -> AsyncIterator[HarnessFactory]:
    """Builds a running app around a fake producer; settings can be overridden per test."""
    stack: list[Any] = []

    async def build(*, revocations: Any = None, **overrides: Any) -> Harness:
        clock = FakeClock()
        producer = FakeProducer()
        issuer = Ed25519Signer.generate()
        verifier = LicenseVerifier.from_public_keys([issuer.public_key])
        settings = ReceiverSettings(**{"enqueue_timeout_seconds": 0.2, **overrides})
        app = create_app(settings, verifier, clock=clock, producer_factory=lambda: producer,
                         revocations=revocations)
        running = lifespan_of(app)
        await running.__aenter__()
        stack.append(running)
        for _ in range(100):
            if app.state.receiver.queue.producer is not None:
                break
            await asyncio.sleep(0.01)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver")
        stack.append(client)
        return Harness(app, client, producer, clock, issuer, verifier, settings)

    yield build
    for item in reversed(stack):
        await item.__aexit__(None, None, None)
