"""The usage consumer: metric attributes redacted before storage (fail closed); dead-letter reasons quote nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from services.usage.points import DecodeStats, decode_points, redacted_point
from services.usage.worker import PermanentMessageError, decode_message
from shared import otlp
from shared.pii import build_engine
from shared.pii.attributes import WITHHELD, WITHHELD_KEY
from tests.conftest import DETECTION_BUDGET_FOR_TESTS_MS
from tests.messages_support import raw_headers, raw_keyring
from tests.unit.reporter.metric_payloads import export

SECRET_TEXT = "my ssn is 123-45-6789"


@dataclass
class Message:
    value: bytes
    headers: list[tuple[str, bytes]]
    topic: str = "otel.metrics.raw"
    partition: int = 0
    offset: int = 0


def _message(body: bytes, content_type: str = otlp.PROTOBUF) -> Message:
    """A raw metric batch with the receiver's (authenticated) headers."""
    return Message(body, raw_headers(body, tenant="t1", org="acme", kind="metrics", content_type=content_type))


def _request() -> Any:
    request = export("claude_code.token.usage", [(0, 10, 5)], cumulative=False,
                     extra={"type": "input", "note": f"{SECRET_TEXT}, mail jane.roe@acme.example"})
    request.resource_metrics[0].resource.attributes.append(
        KeyValue(key="jane.roe@acme.example", value=AnyValue(bytes_value=SECRET_TEXT.encode())))
    return request


def test_points_are_redacted_keys_values_and_bytes() -> None:
    engine = build_engine(field_time_budget_ms=DETECTION_BUDGET_FOR_TESTS_MS)
    [point] = decode_message(_message(_request().SerializeToString()), _stats(), raw_keyring(), engine).points
    stored = json.dumps(point.attributes)
    assert "123-45-6789" not in stored and "jane.roe@acme.example" not in stored
    assert "<US_SSN>" in stored and "<EMAIL>" in stored
    assert point.kind == "input" and point.session_id == "s-1"


def test_without_detection_every_value_and_key_is_withheld_but_identifiers_stay() -> None:
    [raw] = decode_points(_request().SerializeToString(), otlp.PROTOBUF)
    point = redacted_point(None, raw)
    assert set(point.attributes.values()) == {WITHHELD}
    assert all(key == WITHHELD_KEY or key.startswith(f"{WITHHELD_KEY}#") for key in point.attributes)
    assert point.kind == "input" and point.session_id == "s-1"  # identifier-shaped columns are kept


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "x", "sum": {"dataPoints": [
            {"timeUnixNano": SECRET_TEXT}]}}]}]}]}).encode(),
        b'{"resourceMetrics": "' + SECRET_TEXT.encode(),
    ],
    ids=["bad-value", "bad-json"],
)
def test_a_dead_letter_reason_never_quotes_the_payload(body: bytes) -> None:
    with pytest.raises(PermanentMessageError) as caught:
        decode_message(_message(body, otlp.JSON), _stats(), raw_keyring(),
                       build_engine(field_time_budget_ms=DETECTION_BUDGET_FOR_TESTS_MS))
    assert "ssn" not in str(caught.value) and "123-45" not in str(caught.value)


def _stats() -> DecodeStats:
    return DecodeStats()
