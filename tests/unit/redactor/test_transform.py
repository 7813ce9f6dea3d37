"""The transform's fail-closed behaviour, with a stand-in engine: the real engine has its own tests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.canonical import WITHHELD_MARKER
from shared.canonicalize.transform import BatchRejected, TransformPolicy, TransformStats, transform_batch
from shared.messages.raw_batch import RawBatch


def batch(payload: bytes) -> RawBatch:
    """A batch as the decoder hands it over (header checks and authentication: tests/unit/test_messages.py)."""
    return RawBatch("t1", "acme", "lic-1", "application/x-protobuf", 1795878790000000000, "req-1", 1, 1, 1, payload)

POLICY = TransformPolicy(
    plane_by_service={"claude-code": "claude_code", "cowork": "cowork"},
    default_plane="claude_code",
    keep_other_events=True,
    keep_unknown_attributes=True,
)
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")


@dataclass(frozen=True)
class Masked:
    text: str
    counts: dict[str, int]


class EmailOnly:
    """Masks e-mail addresses; enough to see where the transform sends each field."""

    def __init__(self) -> None:
        self.json_calls = 0

    def redact_text(self, text: str) -> Masked:
        masked, n = EMAIL.subn("<EMAIL>", text)
        return Masked(masked, {"EMAIL": n} if n else {})

    def redact_json_text(self, text: str) -> Masked:
        self.json_calls += 1
        return self.redact_text(text)


class Broken:
    def redact_text(self, text: str) -> Masked:
        raise RuntimeError("engine exploded")

    def redact_json_text(self, text: str) -> Masked:
        raise TimeoutError("over budget")


@dataclass
class Fixed:
    """One engine for every tenant; None stands for "detection unavailable"."""

    engine: object

    def engine_for(self, tenant: str) -> object:
        return self.engine


def _events(fixtures_dir: Path, engine: object, policy: TransformPolicy = POLICY):  # type: ignore[no-untyped-def]
    stats = TransformStats()
    body = (fixtures_dir / "logs-tool-session.pb").read_bytes()
    return list(transform_batch(batch(body), Fixed(engine), policy, stats)), stats  # type: ignore[arg-type]


def test_content_is_masked_and_the_redactions_recorded(fixtures_dir: Path) -> None:
    engine = EmailOnly()
    events, stats = _events(fixtures_dir, engine)
    prompt = next(e for e in events if e.event_type == "user_prompt")
    assert "jane.roe@example.com" not in prompt.content["prompt"]
    assert prompt.redacted_fields["prompt"] == {"EMAIL": 1}
    assert prompt.content_captured is True
    assert engine.json_calls > 0  # tool_parameters / tool_input go through the JSON-aware path
    assert stats.redactions["EMAIL"] >= 4
    assert all(e.tenant_id == "t1" and e.org_id == "acme" for e in events)


def test_a_failing_engine_withholds_content_but_keeps_the_event(fixtures_dir: Path) -> None:
    events, stats = _events(fixtures_dir, Broken())
    prompt = next(e for e in events if e.event_type == "user_prompt")
    assert prompt.content["prompt"] == WITHHELD_MARKER
    assert prompt.redacted_fields["prompt"] == {"WITHHELD": 1}
    tool = next(e for e in events if e.event_type == "tool_result")
    assert tool.content["tool_input"] == WITHHELD_MARKER
    assert tool.tool_name == "Bash"  # metadata survives
    assert stats.withheld_fields > 0


def test_disabled_detection_withholds_everything(fixtures_dir: Path) -> None:
    events, _ = _events(fixtures_dir, None)
    for event in events:
        assert set(event.content.values()) <= {WITHHELD_MARKER}
        for value in event.attributes.values():
            assert not isinstance(value, str) or value == WITHHELD_MARKER


def test_other_events_can_be_dropped_by_policy_and_are_counted(fixtures_dir: Path) -> None:
    policy = TransformPolicy(**{**POLICY.__dict__, "keep_other_events": False})
    events, stats = _events(fixtures_dir, EmailOnly(), policy)
    assert {e.event_type for e in events} <= {
        "user_prompt",
        "tool_result",
        "tool_decision",
        "api_request",
        "api_error",
        "assistant_response",
    }
    assert stats.dropped_other > 0


def test_undecodable_payload_is_rejected() -> None:
    with pytest.raises(BatchRejected):
        list(transform_batch(batch(b"\x0a\xff\xff"), Fixed(EmailOnly()), POLICY, TransformStats()))  # type: ignore[arg-type]


def _request_with_resource(resource: dict[str, str], records: list[dict[str, str]]) -> bytes:
    from shared import otlp  # noqa: PLC0415

    request = otlp.ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    for key, value in resource.items():
        attribute = resource_logs.resource.attributes.add()
        attribute.key, attribute.value.string_value = key, value
    scope_logs = resource_logs.scope_logs.add()
    for attributes in records:
        record = scope_logs.log_records.add()
        for key, value in attributes.items():
            attribute = record.attributes.add()
            attribute.key, attribute.value.string_value = key, value
    return request.SerializeToString()


def test_resource_attributes_scanned_once_per_batch_are_redacted_in_every_record() -> None:
    """The resource is scanned once for the batch; what is masked in it is masked, recorded and counted for
    each record as before, and a record attribute with a resource attribute's name still yields to it."""
    body = _request_with_resource(
        {"service.name": "claude-code", "host.name": "laptop of jane@acme.com", "os.type": "linux"},
        [
            {"event.name": "claude_code.user_prompt", "terminal.type": "xterm"},
            {"event.name": "claude_code.user_prompt", "resource.os.type": "mine", "bob@acme.com": "x"},
        ],
    )
    stats = TransformStats()
    events = list(transform_batch(batch(body), Fixed(EmailOnly()), POLICY, stats))  # type: ignore[arg-type]
    assert len(events) == 2
    for event in events:
        assert event.attributes["resource.host.name"] == "laptop of <EMAIL>"
        assert event.redacted_fields["attributes.resource.host.name"] == {"EMAIL": 1}
        assert event.attributes["resource.os.type"] == "linux"
    assert events[0].attributes == {"terminal.type": "xterm", "resource.host.name": "laptop of <EMAIL>",
                                    "resource.os.type": "linux"}
    assert events[1].attributes["<EMAIL>"] == "x"
    assert events[1].redacted_fields["attributes.<key>"] == {"EMAIL": 1}
    assert stats.redactions == {"EMAIL": 3}


def test_resource_attributes_are_withheld_in_every_record_when_detection_fails() -> None:
    body = _request_with_resource(
        {"host.name": "laptop"}, [{"event.name": "claude_code.user_prompt"}, {"event.name": "claude_code.api_request"}]
    )
    stats = TransformStats()
    events = list(transform_batch(batch(body), Fixed(Broken()), POLICY, stats))  # type: ignore[arg-type]
    for event in events:
        assert "resource.host.name" not in event.attributes
        assert event.attributes["[key withheld: detection unavailable]"] == WITHHELD_MARKER
        assert event.redacted_fields["attributes.<key>"] == {"WITHHELD": 1}
        assert event.redacted_fields["attributes.[key withheld: detection unavailable]"] == {"WITHHELD": 1}
