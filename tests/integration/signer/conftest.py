"""Fixtures the signer's integration tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from shared.kafka import make_producer
from tests.conftest import Infra


@pytest.fixture
async def producer(infra: Infra) -> AsyncIterator[AIOKafkaProducer]:
    """A producer on the test broker, for the messages a test's signer reads."""
    producer = make_producer(infra.bootstrap, 1_000_000)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()
