"""Receiver settings fail fast when they contradict each other."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.receiver.settings import ReceiverSettings


def test_defaults_are_consistent() -> None:
    settings = ReceiverSettings()
    assert settings.max_in_flight_bytes >= settings.max_body_bytes
    assert settings.producer_batch_bytes == settings.kafka_max_message_bytes
    assert settings.max_body_bytes == 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_in_flight_bytes": 1024 * 1024}, "MAX_IN_FLIGHT_BYTES"),
        ({"kafka_batch_bytes": 2_000_000}, "KAFKA_BATCH_BYTES"),
        ({"shutdown_grace_seconds": 1, "enqueue_timeout_seconds": 5}, "SHUTDOWN_GRACE_SECONDS"),
        ({"kafka_request_timeout_ms": 1000, "enqueue_timeout_seconds": 5}, "KAFKA_REQUEST_TIMEOUT_MS"),
        ({"receiver_event_loop": "trio"}, "receiver_event_loop"),
    ],
)
def test_contradictions_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ReceiverSettings(**overrides)  # type: ignore[arg-type]


def test_settings_are_frozen() -> None:
    settings = ReceiverSettings()
    with pytest.raises(ValidationError):
        settings.max_body_bytes = 1
