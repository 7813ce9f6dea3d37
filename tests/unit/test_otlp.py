from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from google.protobuf import json_format

from shared import otlp


def _load(fixtures_dir: Path, name: str) -> bytes:
    data = (fixtures_dir / name).read_bytes()
    return gzip.decompress(data) if name.endswith(".gz") else data


def test_protobuf_and_json_captures_decode_to_the_same_shape(fixtures_dir: Path) -> None:
    pb = otlp.decode_request(
        _load(fixtures_dir, "logs-tool-session.pb"), otlp.Encoding.PROTOBUF, otlp.ExportLogsServiceRequest
    )
    js = otlp.decode_request(
        _load(fixtures_dir, "logs-tool-session.json.gz"), otlp.Encoding.JSON, otlp.ExportLogsServiceRequest
    )
    assert otlp.count_log_records(pb) == otlp.count_log_records(js) > 5
    names = [r.body.string_value for rl in js.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    assert "claude_code.user_prompt" in names


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_media_types(content_type: str) -> None:
    assert otlp.media_type(content_type) is otlp.Encoding.JSON


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/grpc"])
def test_unsupported_media_types(content_type: str | None) -> None:
    assert otlp.media_type(content_type) is None


def test_json_follows_otlp_rules_hex_ids_string_ints_integer_enums_unknown_fields() -> None:
    body = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "claude-code"}}]},
                "futureField": {"x": 1},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1795878787316000000",
                                "severityNumber": 9,
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "attributes": [
                                    {"key": "n", "value": {"intValue": "12"}},
                                    {"key": "m", "value": {"intValue": 13}},
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    req = otlp.decode_request(json.dumps(body).encode(), otlp.Encoding.JSON, otlp.ExportLogsServiceRequest)
    record = req.resource_logs[0].scope_logs[0].log_records[0]
    assert record.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert record.span_id.hex() == "eee19b7ec3c1b174"
    assert record.severity_number == 9
    assert [a.value.int_value for a in record.attributes] == [12, 13]
    assert record.time_unix_nano == 1795878787316000000


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'{"resourceLogs": "nope"}',
        b"\xff\xfe",
        b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"}]}]}]}',
    ],
)
def test_bad_json_is_a_payload_error(body: bytes) -> None:
    with pytest.raises(otlp.PayloadError):
        otlp.decode_request(body, otlp.Encoding.JSON, otlp.ExportLogsServiceRequest)


def test_truncated_protobuf_is_a_payload_error(fixtures_dir: Path) -> None:
    body = _load(fixtures_dir, "logs-tool-session.pb")
    with pytest.raises(otlp.PayloadError):
        otlp.decode_request(body[: len(body) // 2], otlp.Encoding.PROTOBUF, otlp.ExportLogsServiceRequest)


def test_split_keeps_every_record_and_respects_the_limit(fixtures_dir: Path) -> None:
    req = otlp.decode_request(
        _load(fixtures_dir, "logs-tool-session.pb"), otlp.Encoding.PROTOBUF, otlp.ExportLogsServiceRequest
    )
    big = otlp.ExportLogsServiceRequest()
    for _ in range(40):
        big.resource_logs.extend(req.resource_logs)
    chunks, oversized = otlp.split_logs(big, 20_000)
    assert not oversized
    assert len(chunks) > 1
    assert all(len(c.payload) <= 20_000 for c in chunks)
    assert sum(c.record_count for c in chunks) == otlp.count_log_records(big)
    rebuilt = [otlp.decode_request(c.payload, otlp.Encoding.PROTOBUF, otlp.ExportLogsServiceRequest) for c in chunks]
    original = [
        json_format.MessageToDict(r) for rl in big.resource_logs for sl in rl.scope_logs for r in sl.log_records
    ]
    again = [
        json_format.MessageToDict(r)
        for q in rebuilt
        for rl in q.resource_logs
        for sl in rl.scope_logs
        for r in sl.log_records
    ]
    assert again == original
    assert rebuilt[0].resource_logs[0].resource == req.resource_logs[0].resource


def test_split_reports_a_record_larger_than_a_message() -> None:
    req = otlp.ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    records.add().body.string_value = "x" * 5_000
    records.add().body.string_value = "small"
    chunks, oversized = otlp.split_logs(req, 2_000)
    assert len(oversized) == 1
    assert sum(c.record_count for c in chunks) == 1
