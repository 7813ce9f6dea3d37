"""The dead-letter exporter's gauges, from a fake broker, including retention and requeue markers."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, generate_latest

from services.auditctl.ops.exporter import DeadLetterExporter, DeadLetterIndex, DeadLetterMetrics
from shared.pipeline import dead_letter_headers
from tests.unit.ops.fakes import FakeBroker


def _dead_letter(broker: FakeBroker, stage: str, source: str, failed_at_s: int) -> None:
    headers = dead_letter_headers(source, 0, 1, "err", stage, [("tenant", b"t1")])
    headers = [(k, str(failed_at_s * 10**9).encode() if k == "dlq.failed_at" else v) for k, v in headers]
    broker.add("dlq", 0, failed_at_s * 1000, b"x", headers)


async def test_depth_unrequeued_and_age_follow_the_topics() -> None:
    broker = FakeBroker()
    _dead_letter(broker, "redactor", "raw", 1000)
    _dead_letter(broker, "redactor", "raw", 1100)
    _dead_letter(broker, "signer", "canonical", 1200)
    registry = CollectorRegistry()
    clock = [1300.0]
    exporter = DeadLetterExporter(DeadLetterIndex(broker, "dlq", "marks"),
                                  DeadLetterMetrics(registry), registry, 10, clock=lambda: clock[0])
    assert not exporter.ready
    assert await exporter.scan_once()
    text = generate_latest(registry).decode()
    assert 'audit_deadletter_messages{source_topic="raw",stage="redactor"} 2.0' in text
    assert 'audit_deadletter_unrequeued_messages{source_topic="canonical",stage="signer"} 1.0' in text
    assert "audit_deadletter_oldest_unrequeued_age_seconds 300.0" in text
    assert 'audit_deadletter_end_offset{partition="0"} 3.0' in text

    broker.add("marks", 0, 0, b'{"requeued_at": "x", "requeue_id": "r", "target": "raw"}', key=b"0:0")
    broker.topics["dlq"].begin[0] = 1  # retention removed the first one
    clock[0] = 1400.0
    assert await exporter.scan_once()
    text = generate_latest(registry).decode()
    assert 'audit_deadletter_messages{source_topic="raw",stage="redactor"} 1.0' in text
    assert "audit_deadletter_oldest_unrequeued_age_seconds 300.0" in text  # 1100 is now the oldest
    assert exporter.ready

    transport = httpx.ASGITransport(app=exporter.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://exporter") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert "audit_deadletter_messages" in (await client.get("/metrics")).text
        clock[0] = 1500.0  # no scan for > 3 intervals
        assert (await client.get("/readyz")).status_code == 503


async def test_a_failed_scan_is_counted_and_keeps_the_last_values() -> None:
    broker = FakeBroker()  # no dead-letter topic at all
    registry = CollectorRegistry()
    exporter = DeadLetterExporter(DeadLetterIndex(broker, "dlq", "marks"),
                                  DeadLetterMetrics(registry), registry, 10)
    assert not await exporter.scan_once()
    assert "audit_deadletter_scan_errors_total 1.0" in generate_latest(registry).decode()
