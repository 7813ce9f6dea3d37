"""Kafka plumbing shared by the services: producer and consumer factories, topics and headers.

Producers are at-least-once (``acks=all``, not idempotent): every stage downstream dedupes by event id,
so a retried send can never become a second audit row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

Headers = list[tuple[str, bytes]]


class MessageProducer(Protocol):
    """The part of a producer the stages use; tests can stand in for it where no broker is the point."""

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers | None = None
    ) -> asyncio.Future[Any]: ...


def make_producer(bootstrap: str, max_message_bytes: int, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": False,
        # The production broker refuses anything over message.max.bytes; failing here, in our own process,
        # keeps that from being a surprise that only shows in production.
        "max_request_size": max_message_bytes,
        "linger_ms": 5,
        "request_timeout_ms": 10_000,
        "retry_backoff_ms": 200,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(
    bootstrap: str, group_id: str, *topics: str, session_timeout_ms: int = 10_000, **overrides: Any
) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_bytes": 16 * 1024 * 1024,
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": max(500, session_timeout_ms // 6),
        "max_poll_interval_ms": 300_000,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    configs: tuple[tuple[str, str], ...] = ()


async def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec]) -> list[str]:
    """Create missing topics; existing ones are left as they are. Returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            # Another process may win the race; the topic is there then, which is all we need.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs) or None)
                        for s in missing
                    ]
                )
        return [s.name for s in missing]
    finally:
        await admin.close()


def encode_headers(values: Mapping[str, str | int | None]) -> Headers:
    return [(key, str(value).encode()) for key, value in values.items() if value is not None]


def decode_headers(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    return {key: value.decode("utf-8", "replace") for key, value in (headers or ())}


def tenant_key(tenant_id: str) -> bytes:
    """Both topics are keyed by tenant so that each tenant's records keep their order end to end."""
    return tenant_id.encode()


class StartableClient(Protocol):
    async def start(self) -> None: ...


async def start_clients(*clients: StartableClient, stop: asyncio.Event) -> bool:
    """Start producers and consumers, waiting out a broker that is not up yet; False if stopped first."""
    from shared.pipeline import Backoff  # noqa: PLC0415 - pipeline imports this module

    backoff = Backoff(0.5, 10.0)
    pending = list(clients)
    while pending and not stop.is_set():
        try:
            await pending[0].start()
            pending.pop(0)
        except (KafkaError, OSError):
            await backoff.sleep(stop)
    return not pending


async def send_until_acknowledged(
    producer: MessageProducer, topic: str, value: bytes, *, key: bytes | None, headers: Headers,
    stop: asyncio.Event,
) -> None:
    """Dead letters must not be lost: retry with backoff until the broker acknowledges (or we are stopping)."""
    from shared.pipeline import Backoff, describe  # noqa: PLC0415 - pipeline imports this module

    backoff = Backoff()
    while True:
        try:
            await (await producer.send(topic, value, key=key, headers=headers))
            return
        except KafkaError as exc:
            if stop.is_set():
                raise
            logging.getLogger("kafka").warning("produce failed, retrying", extra={"error": describe(exc)})
            await backoff.sleep(stop)
