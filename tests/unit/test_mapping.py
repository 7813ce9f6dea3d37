from __future__ import annotations

import gzip
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from shared import otlp
from shared.canonical import INTEGER_RANGE
from shared.canonicalize.mapping import as_bool, as_cost, as_int, attributes_of, map_record

RECEIVED = datetime(2026, 11, 28, 15, 14, tzinfo=UTC)
PLANES = {"claude-code": "claude_code", "claude-code-desktop": "claude_code", "cowork": "cowork"}


def _records(fixtures_dir: Path, name: str) -> list[tuple[LogRecord, dict[str, object]]]:
    req = otlp.decode_request((fixtures_dir / name).read_bytes(), otlp.Encoding.PROTOBUF, otlp.ExportLogsServiceRequest)
    return [
        (r, attributes_of(rl.resource.attributes))
        for rl in req.resource_logs
        for sl in rl.scope_logs
        for r in sl.log_records
    ]


def _map(record: LogRecord, resource: dict[str, object], org: str = "acme"):  # type: ignore[no-untyped-def]
    return map_record(
        record,
        resource,
        tenant="t1",
        org=org,
        plane_by_service=PLANES,
        default_plane="claude_code",
        keep_unknown_attributes=True,
        received_at=RECEIVED,
    )


def test_real_capture_maps_every_audited_field(fixtures_dir: Path) -> None:
    mapped: dict[str, Any] = {}
    for record, resource in _records(fixtures_dir, "logs-tool-session.pb"):
        one = _map(record, resource)
        mapped.setdefault(one.event_type, one)
    api = mapped["api_request"].columns
    assert api["model"] == "claude-opus-5-5"
    assert api["input_tokens"] == 1200 and api["output_tokens"] == 87
    assert api["tokens_used"] == 1200 + 87 + 300 + 50
    assert api["cost"] == Decimal("0.006850")
    assert api["plane"] == "claude_code"
    assert api["correlation_id"] == "6df1ad64-f2a6-408f-88a1-69c3cdb5bf93"
    assert api["session_id"] == "9c82ae41-69ad-4e74-85a8-70cc8c88f69c"
    assert api["event_time"] == datetime(2026, 11, 28, 15, 13, 7, 392000, tzinfo=UTC)
    decision = mapped["tool_decision"].columns
    assert (decision["decision"], decision["decision_source"], decision["tool_name"]) == ("accept", "config", "Bash")
    result = mapped["tool_result"]
    assert result.columns["success"] is True and result.columns["duration_ms"] == 29
    assert "jane.roe@example.com" in result.raw_content["tool_input"]
    prompt = mapped["user_prompt"]
    assert prompt.content_lengths["prompt"] == 81
    assert "prompt_text" not in prompt.other_attributes  # same text as prompt: stored once
    assert mapped["user_prompt"].columns["user_email"] is None


def test_event_ids_are_deterministic_and_distinct(fixtures_dir: Path) -> None:
    first = [_map(r, res).event_id for r, res in _records(fixtures_dir, "logs-tool-session.pb")]
    again = [_map(r, res).event_id for r, res in _records(fixtures_dir, "logs-tool-session.pb")]
    assert first == again
    assert len(set(first)) == len(first)


def test_claimed_org_never_decides_tenancy(fixtures_dir: Path) -> None:
    record, resource = _records(fixtures_dir, "logs-api-error.pb")[-1]
    attr = record.attributes.add()
    attr.key, attr.value.string_value = "organization.id", "globex"
    mapped = _map(record, resource, org="acme")
    assert mapped.columns["claimed_org_id"] == "globex"
    assert mapped.columns["claimed_org_mismatch"] is True


def test_content_capture_off_keeps_lengths_only(fixtures_dir: Path) -> None:
    req = otlp.decode_request(
        gzip.decompress((fixtures_dir / "logs-tool-session-nocontent.pb.gz").read_bytes()),
        otlp.Encoding.PROTOBUF,
        otlp.ExportLogsServiceRequest,
    )
    rl = req.resource_logs[0]
    for record in (r for sl in rl.scope_logs for r in sl.log_records):
        mapped = _map(record, attributes_of(rl.resource.attributes))
        assert mapped.raw_content == {}
        if mapped.event_type == "user_prompt":
            assert mapped.content_lengths["prompt"] > 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("29", 29),
        (29, 29),
        (29.0, 29),
        ("29.7", 29),
        ("x", None),
        (True, None),
        (None, None),
        (2**63 - 1, 2**63 - 1),
        (-(2**63), -(2**63)),
        (2**63, None),  # beyond bigint: the column could not hold it
        ("1e300", None),
        (1e19, None),
        ("9" * 5000, None),  # more digits than int() reads from text
    ],
)
def test_as_int(value: object, expected: int | None) -> None:
    assert as_int(value) == expected


@pytest.mark.parametrize(("value", "expected"), [(2**31 - 1, 2**31 - 1), (-(2**31), -(2**31)), (2**31, None)])
def test_as_int_within_an_integer_column(value: int, expected: int | None) -> None:
    assert as_int(value, INTEGER_RANGE) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("false", False), (True, True), (0, False), ("maybe", None)]
)
def test_as_bool(value: object, expected: bool | None) -> None:
    assert as_bool(value) == expected


def test_cost_prefers_exact_micros() -> None:
    assert as_cost(6850, 0.00685) == Decimal("0.006850")
    assert as_cost("6850", None) == Decimal("0.006850")
    assert as_cost(None, 0.1) == Decimal("0.100000")
    assert as_cost(None, "nan") is None


@pytest.mark.parametrize(
    ("micros", "usd", "expected"),
    [
        (None, "99999999999999.999999", Decimal("99999999999999.999999")),  # the largest numeric(20, 6)
        (None, "-99999999999999.999999", Decimal("-99999999999999.999999")),
        (None, "100000000000000", None),
        (2**63 - 1, None, Decimal("9223372036854.775807")),
        (2**63, 5, Decimal("5.000000")),  # micro-dollars that are not a bigint are unreadable: the double is used
        (None, "99999999999999.9999999", None),  # rounds up to 10^14
        (None, "1e300", None),
        (None, 1e300, None),
    ],
)
def test_cost_the_column_cannot_hold_is_unreadable(micros: object, usd: object, expected: Decimal | None) -> None:
    assert as_cost(micros, usd) == expected


def _claim(record: LogRecord, **changes: str) -> LogRecord:
    """A copy of ``record`` with string attributes changed: the same session, sequence and event name."""
    copy = LogRecord()
    copy.CopyFrom(record)
    for attribute in copy.attributes:
        if attribute.key in changes:
            attribute.value.string_value = changes[attribute.key]
    return copy


def test_event_ids_bind_content_so_a_second_claim_on_a_sequence_gets_its_own_id(fixtures_dir: Path) -> None:
    record, resource = next((r, res) for r, res in _records(fixtures_dir, "logs-tool-session.pb")
                            if _map(r, res).event_type == "tool_decision")
    real = _map(record, resource)
    assert real.columns["session_id"] and real.columns["event_sequence"] is not None
    # A colleague who knows the session id sends a different decision under the same session and sequence:
    # it used to get the real event's id, and the real one was then skipped as a duplicate.
    fake = _map(_claim(record, decision="accept" if real.columns["decision"] != "accept" else "reject"), resource)
    assert (fake.columns["session_id"], fake.columns["event_sequence"]) == (
        real.columns["session_id"], real.columns["event_sequence"])
    assert fake.event_id != real.event_id
    # A client's retry of the same bytes, in either encoding, still gets the same id.
    again = LogRecord.FromString(record.SerializeToString())
    assert _map(again, resource).event_id == real.event_id
    from google.protobuf import json_format  # noqa: PLC0415

    as_json = json_format.Parse(json_format.MessageToJson(record), LogRecord())
    assert _map(as_json, resource).event_id == real.event_id
    # The id also binds the resource (who sent it): the same record from another resource is another event.
    assert _map(record, {**resource, "user.email": "someone.else@example.com"}).event_id != real.event_id
