"""A real receiver (Hypercorn, in this test process) against the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from hypercorn.asyncio import serve
from prometheus_client import generate_latest

from deploy.local.infra import free_port
from services.auditctl.licenses import store_license
from services.receiver.__main__ import RevocationList, hypercorn_config
from services.receiver.app import create_app
from services.receiver.settings import ReceiverSettings
from shared.keys import Ed25519Signer
from shared.licensing import License, LicenseVerifier, issue_license
from tests.conftest import Infra, Topics, create_database, make_topics


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Everything the topic holds now, from the beginning of every partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        for _ in range(50):
            if partitions:
                break
            await consumer.client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"topic {topic} has no partitions"
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        ends = await consumer.end_offsets(assigned)
        # seek() to the listed beginning rather than seek_to_beginning(), which waits half a second.
        for tp, offset in (await consumer.beginning_offsets(assigned)).items():
            consumer.seek(tp, offset)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while any([await consumer.position(tp) < ends[tp] for tp in assigned]):
            batches = await consumer.getmany(*assigned, timeout_ms=1000)
            for batch in batches.values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


@dataclass
class LiveReceiver:
    url: str
    bootstrap: str
    database_url: str
    topics: Topics
    issuer: Ed25519Signer
    settings: ReceiverSettings
    app: Any
    client: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.url, timeout=30)

    def metrics_text(self) -> str:
        return generate_latest(self.app.state.receiver.registry).decode()

    async def licence(self, org: str, tenant: str | None = None, **kwargs: Any) -> tuple[License, str]:
        lic, token = issue_license(self.issuer, org_id=org, tenant_id=tenant, **kwargs)
        await store_license(self.database_url, lic)
        return lic, token

    async def raw_logs(self) -> list[ConsumerRecord[bytes, bytes]]:
        return await read_topic(self.bootstrap, self.topics.raw_logs)

    async def assert_healthy(self) -> None:
        assert (await self.client.get("/healthz")).status_code == 200
        ready = await self.client.get("/readyz")
        assert ready.status_code == 200, ready.text

    async def wait_for_revocations_refresh(self) -> None:
        await asyncio.sleep(self.settings.revocation_refresh_seconds * 3)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@contextlib.asynccontextmanager
async def live_receiver(infra: Infra, tmp_path: Path, **overrides: Any) -> AsyncIterator[LiveReceiver]:
    database_url = await create_database(infra.server_dsn)
    topics = await make_topics(infra.bootstrap)
    issuer = Ed25519Signer.generate()
    port = free_port()
    settings = ReceiverSettings(**{
        "database_url": database_url,
        "kafka_bootstrap_servers": infra.bootstrap,
        "topic_raw_logs": topics.raw_logs,
        "topic_raw_metrics": topics.raw_metrics,
        "receiver_host": "127.0.0.1",
        "receiver_port": port,
        "revocation_refresh_seconds": 0.2,
        "enqueue_timeout_seconds": 3.0,
        **overrides,
    })
    revocations = RevocationList(database_url)
    app = create_app(settings, LicenseVerifier.from_public_keys([issuer.public_key]), revocations=revocations.fetch)
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, hypercorn_config(settings), shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    live = LiveReceiver(f"http://127.0.0.1:{port}", infra.bootstrap, database_url, topics, issuer, settings, app)
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if (await live.client.get("/readyz")).status_code == 200:
                    break
            await asyncio.sleep(0.05)
        else:
            raise TimeoutError("the receiver did not become ready")
        yield live
    finally:
        await live.client.aclose()
        stop.set()
        await server
        await revocations.close()


@pytest.fixture
async def receiver(infra: Infra, tmp_path: Path) -> AsyncIterator[LiveReceiver]:
    async with live_receiver(infra, tmp_path) as live:
        yield live


def days_ago(days: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)
