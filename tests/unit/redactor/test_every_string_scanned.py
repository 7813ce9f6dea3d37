"""No clear text leaves the redactor by a side door: event_type, keys, bytes, promoted columns, dead letters."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from shared import otlp
from shared.canonicalize.transform import BatchRejected, TransformPolicy, TransformStats, transform_batch
from shared.messages.raw_batch import RawBatch
from shared.pii import PiiEngine, build_engine
from tests.conftest import DETECTION_BUDGET_FOR_TESTS_MS


def batch(payload: bytes, content_type: str = otlp.PROTOBUF) -> RawBatch:
    """A raw batch as the decoder hands it over (headers and authentication: tests/unit/test_messages.py)."""
    return RawBatch("t1", "acme", "lic-1", content_type, 1795878790000000000, "req-1", 1, 1, 1, payload)

POLICY = TransformPolicy(plane_by_service={}, default_plane="claude_code", keep_other_events=True,
                         keep_unknown_attributes=True)
SECRET_TEXT = "my ssn is 123-45-6789, mail jane.roe@acme.example"


class OneEngine:
    def __init__(self, engine: PiiEngine) -> None:
        self.engine = engine

    def engine_for(self, tenant: str) -> PiiEngine:
        return self.engine


@pytest.fixture(scope="module")
def engines() -> OneEngine:
    return OneEngine(build_engine(field_time_budget_ms=DETECTION_BUDGET_FOR_TESTS_MS))


def _record(request: ExportLogsServiceRequest, attributes: dict[str, AnyValue], body: str | None = None) -> None:
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.time_unix_nano = 1795878790000000000
    for key, value in attributes.items():
        record.attributes.append(KeyValue(key=key, value=value))
    if body is not None:
        record.body.string_value = body


def _events(engines: OneEngine, request: ExportLogsServiceRequest) -> list[dict[str, Any]]:
    stats = TransformStats()
    events = list(transform_batch(batch(request.SerializeToString()), engines, POLICY, stats))
    return [json.loads(e.to_json()) for e in events]


def _assert_no_clear_text(document: object) -> None:
    text = json.dumps(document, ensure_ascii=False)
    assert "123-45-6789" not in text
    assert "jane.roe@acme.example" not in text


def test_a_body_that_is_no_event_name_is_content_and_the_event_is_unknown(engines: OneEngine) -> None:
    request = ExportLogsServiceRequest()
    _record(request, {}, body=SECRET_TEXT)
    _record(request, {"event.name": AnyValue(string_value=SECRET_TEXT)})
    _record(request, {}, body="claude_code.plugin_loaded")
    first, second, third = _events(engines, request)
    for event in (first, second):
        assert event["event_type"] == "unknown"
        _assert_no_clear_text(event)
    assert "<US_SSN>" in first["content"]["body"]
    assert "<EMAIL>" in second["content"]["event_name"]
    assert third["event_type"] == "plugin_loaded"
    assert third["content"] == {}


@pytest.mark.parametrize("name", ["user_prompt", "claude_code.tool_result", "a.b_c"])
def test_event_names_shaped_like_names_are_kept(engines: OneEngine, name: str) -> None:
    request = ExportLogsServiceRequest()
    _record(request, {"event.name": AnyValue(string_value=name)})
    [event] = _events(engines, request)
    assert event["event_type"] == name.removeprefix("claude_code.")


def test_attribute_keys_json_keys_and_bytes_are_scanned(engines: OneEngine) -> None:
    tool_input = json.dumps({"jane.roe@acme.example": {"note": "ssn 123-45-6789"}, "command": "ls"})
    request = ExportLogsServiceRequest()
    _record(request, {
        "event.name": AnyValue(string_value="tool_result"),
        "tool_input": AnyValue(string_value=tool_input),
        "jane.roe@acme.example": AnyValue(string_value="a key that is personal"),
        "blob": AnyValue(bytes_value=SECRET_TEXT.encode()),
        "binary": AnyValue(bytes_value=b"\xff\xfe\x00"),
    })
    [event] = _events(engines, request)
    _assert_no_clear_text(event)
    assert json.loads(event["content"]["tool_input"])["command"] == "ls"
    attributes = event["attributes"]
    assert "<EMAIL>" in attributes
    assert "<US_SSN>" in attributes["blob"]
    assert attributes["binary"] == "[3 bytes withheld: not UTF-8 text]"


def test_promoted_columns_are_scanned_and_identifiers_survive(engines: OneEngine) -> None:
    request = ExportLogsServiceRequest()
    _record(request, {
        "event.name": AnyValue(string_value="api_request"),
        "session.id": AnyValue(string_value="9c82ae41-69ad-4e74-85a8-70cc8c88f69c"),
        "model": AnyValue(string_value="claude-opus-4-5-20251101"),
        "tool_name": AnyValue(string_value="call jane.roe@acme.example"),
        "decision": AnyValue(string_value="my ssn is 123-45-6789"),
    })
    [event] = _events(engines, request)
    _assert_no_clear_text(event)
    assert event["session_id"] == "9c82ae41-69ad-4e74-85a8-70cc8c88f69c"
    assert event["model"] == "claude-opus-4-5-20251101"


def test_a_json_parse_error_never_quotes_the_payload(engines: OneEngine) -> None:
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": SECRET_TEXT, "body": {"stringValue": "x"}}]}]}]}).encode()
    with pytest.raises(BatchRejected) as caught:
        list(transform_batch(batch(body, otlp.JSON), engines, POLICY, TransformStats()))
    assert "ssn" not in str(caught.value) and "jane" not in str(caught.value)
    with pytest.raises(BatchRejected) as caught:
        list(transform_batch(batch(b'{"resourceLogs": "' + SECRET_TEXT.encode(), otlp.JSON), engines, POLICY,
                             TransformStats()))
    assert "ssn" not in str(caught.value) and "line 1" in str(caught.value)
