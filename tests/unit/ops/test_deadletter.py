"""Dead-letter logic: parsing the context headers, selection, content-free inspection, requeue once."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.auditctl.ops.deadletter import (
    DeadLetter,
    DeadLetterRef,
    RequeueMarker,
    Selection,
    describe_payload,
    requeue,
    select,
)
from services.auditctl.ops.produce import ProduceStep
from services.auditctl.ops.reader import Record
from shared.pipeline import dead_letter_headers
from tests.unit.ops.fakes import FakeProducer

TOPICS = {"raw_logs_topic": "raw", "raw_metrics_topic": "raw-metrics", "canonical_topic": "canonical"}
ORIGINAL = [("tenant", b"t1"), ("org", b"acme"), ("content_type", b"application/x-protobuf"),
            ("request_id", b"req-1"), ("record_count", b"6"), ("replay.id", b"old")]


def letter(offset: int, value: bytes = b"payload", stage: str = "redactor", source: str = "raw",
           error: str = "BatchRejected: raw batch has no valid received_at header") -> DeadLetter:
    headers = dead_letter_headers(source, 2, 40 + offset, error, stage, ORIGINAL)
    return DeadLetter.from_record(Record("dlq", 0, offset, 1, b"t1", value, tuple(headers)))


def test_headers_are_decoded_into_context_and_original_headers() -> None:
    dl = letter(3)
    assert dl.ref == DeadLetterRef(0, 3) and str(dl.ref) == "0:3"
    assert (dl.source_topic, dl.source_partition, dl.source_offset, dl.stage) == ("raw", 2, 43, "redactor")
    assert dl.failed_at is not None and abs(dl.failed_at.timestamp() - time.time()) < 60
    assert dl.tenant == "t1" and dl.original_headers["request_id"] == "req-1"
    assert not any(k.startswith("dlq.") for k in dl.original_headers)
    row = dl.summary(None)
    assert row["records"] == 6 and row["requeued_at"] is None and row["source"] == "raw/2/43"


def test_refs_parse_strictly() -> None:
    assert DeadLetterRef.parse(" 1:20 ") == DeadLetterRef(1, 20)
    for bad in ("1", "a:1", "1:-2", ""):
        with pytest.raises(ValueError):
            DeadLetterRef.parse(bad)


def test_selection_by_ref_stage_tenant_error_and_time() -> None:
    letters = [letter(0), letter(1, stage="signer", source="canonical", error="ValueError: bad"), letter(2)]
    assert [d.ref.offset for d in select(letters, Selection(stage="signer"))] == [1]
    assert [d.ref.offset for d in select(letters, Selection(refs=frozenset({DeadLetterRef(0, 2)})))] == [2]
    assert [d.ref.offset for d in select(letters, Selection(error_contains="RECEIVED_AT"))] == [0, 2]
    assert select(letters, Selection(tenant="other")) == []
    assert select(letters, Selection(since=datetime(2100, 1, 1, tzinfo=UTC))) == []


def test_inspection_describes_a_batch_without_its_content(fixtures_dir: Path) -> None:
    body = (fixtures_dir / "logs-api-error.pb").read_bytes()
    shape = describe_payload(letter(0, body), **TOPICS)
    assert shape["decodable"] == "yes" and shape["log_records"] == 6
    assert shape["event_names"] == {"managed_settings_resolved": 1, "plugin_loaded": 3, "user_prompt": 1,
                                    "api_error": 1}
    text = json.dumps(shape)
    for record_text in ("managed_settings", "claude-opus"):  # attribute values inside the batch
        assert record_text not in text.replace("managed_settings_resolved", "")
    assert len(shape["sha256"]) == 64 and shape["bytes"] == len(body)
    assert describe_payload(letter(1, b"\x00garbage"), **TOPICS)["decodable"].startswith("no")


def test_inspection_describes_a_metrics_batch_by_metric_names(fixtures_dir: Path) -> None:
    body = (fixtures_dir / "metrics-tool-session.pb").read_bytes()
    shape = describe_payload(letter(0, body, stage="usage", source="raw-metrics"), **TOPICS)
    assert shape["decodable"] == "yes" and shape["data_points"] > 0 and shape["metric_names"]


def test_inspection_of_a_canonical_event_names_it_but_shows_no_content() -> None:
    event = {"event_id": "e1", "event_type": "user_prompt", "tenant_id": "t1", "event_time": "2026-01-01T00:00:00",
             "content": {"prompt": "call jane.roe@example.com"}}
    shape = describe_payload(letter(0, json.dumps(event).encode(), "signer", "canonical"), **TOPICS)
    assert shape["event_id"] == "e1" and shape["content_fields"] == ["prompt"]
    assert "jane.roe" not in json.dumps(shape)


async def test_requeue_sends_back_to_the_source_topic_then_marks_and_never_twice() -> None:
    producer = FakeProducer()
    markers: dict[DeadLetterRef, RequeueMarker] = {}
    letters = [letter(0), letter(1, stage="signer", source="canonical"), letter(2, source="somewhere-else")]
    step = ProduceStep(producer, 10)
    first = await requeue(letters, markers, step, dead_letter_topic="dlq", marker_topic="marks",
                          allowed_targets=("raw", "canonical"), max_message_bytes=1_000_000)
    assert first.requeued == 2 and len(first.refused) == 1 and "somewhere-else" in first.refused[0]
    sent = [(topic, key, dict(headers)) for topic, key, _, headers in producer.sent]
    assert [s[0] for s in sent] == ["raw", "marks", "canonical", "marks"]  # each marker right after its batch
    raw_headers = sent[0][2]
    assert raw_headers["tenant"] == b"t1" and "dlq.error" not in raw_headers and "replay.id" not in raw_headers
    assert raw_headers["requeue.source"] == b"dlq/0/0" and sent[1][1] == b"0:0"

    # Markers read back from the topic (as the next run would) make a second requeue a no-op.
    reread = {m.ref: m for m in (RequeueMarker.from_record(r) for r in _records(producer, "marks")) if m}
    second = await requeue(letters[:2], reread, step, dead_letter_topic="dlq", marker_topic="marks",
                           allowed_targets=("raw", "canonical"), max_message_bytes=1_000_000)
    assert (second.requeued, second.already_requeued) == (0, 2)
    assert len(producer.sent) == 4


async def test_dry_run_sends_nothing() -> None:
    producer = FakeProducer()
    summary = await requeue([letter(0)], {}, ProduceStep(producer, 10), dead_letter_topic="dlq",
                            marker_topic="marks", allowed_targets=("raw",), max_message_bytes=1_000_000,
                            dry_run=True)
    assert producer.sent == [] and len(summary.would_requeue) == 1
    assert "would requeue 1" in "\n".join(summary.describe(dry_run=True))


def _records(producer: FakeProducer, topic: str) -> list[Record]:
    return [Record(topic, 0, i, 0, key, value, tuple(headers))
            for i, (t, key, value, headers) in enumerate(producer.sent) if t == topic]
