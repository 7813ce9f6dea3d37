"""The replay's decisions, with a fake broker and database: what is re-sent, skipped, dead-lettered, counted."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from services.auditctl.ops.produce import ProduceStep, annotate, message_size
from services.auditctl.ops.replay import REPLAY_ID, REPLAY_SOURCE, Replayer, Unprocessable, plan_replay
from services.auditctl.ops.window import OffsetWindow, TimeWindow, resolve_window
from tests.unit.ops.fakes import FakeBroker, FakeChainedIds, FakeProducer

T0 = 1_800_000_000_000


def identify(value: bytes, headers: Sequence[tuple[str, bytes]]) -> list[str]:
    """Test stand-in for the redactor's ids: the payload is the JSON list of its event ids."""
    if "tenant" not in dict(headers):
        raise Unprocessable("raw batch has no tenant/org headers")
    ids: list[str] = json.loads(value)
    return ids


def raw(broker: FakeBroker, partition: int, ids: list[str], tenant: str = "t1", ts: int = T0) -> None:
    headers = [("tenant", tenant.encode()), ("org", b"o"), ("record_count", str(len(ids)).encode()),
               ("request_id", b"req"), ("replay.id", b"an-older-replay")]
    broker.add("raw", partition, ts, json.dumps(ids).encode(), headers, tenant.encode())


async def _replay(broker: FakeBroker, chained: FakeChainedIds, tenant: str | None = None,
                  producer: FakeProducer | None = None) -> tuple[Replayer, FakeProducer]:
    producer = producer or FakeProducer()
    window = await resolve_window(broker, "raw", TimeWindow(datetime.fromtimestamp(T0 / 1000 - 1, UTC)))
    plan = await plan_replay(broker, window, tenant)
    replayer = Replayer(broker, ProduceStep(producer, max_in_flight=2), chained, identify,
                        raw_topic="raw", dead_letter_topic="dlq", max_message_bytes=1_000_000, lookup_batch=2)
    await replayer.run(plan)
    return replayer, producer


async def test_only_messages_with_missing_events_are_resent_with_original_and_replay_headers() -> None:
    broker = FakeBroker()
    raw(broker, 0, ["a", "b"])      # all chained: not re-sent
    raw(broker, 0, ["c", "d"])      # d missing: re-sent whole; the signer skips c
    raw(broker, 1, ["e"])           # missing
    replayer, producer = await _replay(broker, FakeChainedIds({"a", "b", "c"}))
    s = replayer.summary
    assert (s.replayed_events, s.replayed_messages, s.skipped_duplicate_events, s.skipped_messages) == (2, 2, 3, 1)
    assert [json.loads(v) for _, _, v, _ in producer.sent] == [["c", "d"], ["e"]]
    topic, key, _, headers = producer.sent[0]
    names = dict(headers)
    assert topic == "raw" and key == b"t1"
    assert names["tenant"] == b"t1" and names["request_id"] == b"req"  # original headers kept
    assert names[REPLAY_ID] == s.replay_id.encode() and names[REPLAY_SOURCE] == b"raw/0/1"
    assert [k for k, _ in headers].count(REPLAY_ID) == 1  # the older replay's annotation is replaced


async def test_the_same_event_in_two_messages_is_counted_and_resent_once() -> None:
    broker = FakeBroker()
    raw(broker, 0, ["x", "y"])
    raw(broker, 0, ["x", "y"])  # a client's retry, or an earlier replay's copy
    raw(broker, 0, ["y", "z"])
    replayer, producer = await _replay(broker, FakeChainedIds({"z"}))
    s = replayer.summary
    assert (s.replayed_events, s.skipped_duplicate_events) == (2, 1)
    assert len(producer.sent) == 1


async def test_a_second_replay_after_everything_is_chained_sends_nothing() -> None:
    broker = FakeBroker()
    raw(broker, 0, ["a"])
    raw(broker, 1, ["b", "c"])
    chained = FakeChainedIds()
    first, _ = await _replay(broker, chained)
    chained.chained |= {"a", "b", "c"}  # what the signer did meanwhile
    second, producer = await _replay(broker, chained)
    assert first.summary.replayed_events == 3
    assert second.summary.replayed_events == 0 and second.summary.skipped_duplicate_events == 3
    assert producer.sent == []


async def test_tenant_filter_and_unprocessable_messages() -> None:
    broker = FakeBroker()
    raw(broker, 0, ["a"], tenant="t1")
    raw(broker, 0, ["b"], tenant="t2")
    broker.add("raw", 0, T0, b"garbage", [("request_id", b"r9")])  # no tenant header at all
    replayer, producer = await _replay(broker, FakeChainedIds(), tenant="t1")
    assert replayer.summary.other_tenants == 2  # t2, and the headerless one is nobody's
    replayer, producer = await _replay(broker, FakeChainedIds())
    assert replayer.summary.dead_lettered == 1
    dead = [(t, dict(h)) for t, _, _, h in producer.sent if t == "dlq"]
    assert dead[0][1]["dlq.stage"] == b"replay" and dead[0][1]["dlq.source_offset"] == b"2"
    assert dead[0][1]["request_id"] == b"r9"


async def test_wait_until_chained_reports_what_is_still_missing() -> None:
    broker = FakeBroker()
    raw(broker, 0, ["a", "b"])
    chained = FakeChainedIds()
    replayer, _ = await _replay(broker, chained)
    chained.chained.add("a")
    summary = await replayer.wait_until_chained(timeout=0.2, poll_interval=0.05)
    assert summary.confirmed_events == 1 and summary.missing_event_ids == ["b"]


async def test_failed_sends_are_retried_and_counted_once_acknowledged() -> None:
    broker = FakeBroker()
    raw(broker, 0, ["a"])
    replayer, producer = await _replay(broker, FakeChainedIds(), producer=FakeProducer(fail_first=1))
    assert replayer.summary.replayed_events == 1 and len(producer.sent) == 1


async def test_plan_estimates_records_from_a_sample_and_counts_messages_exactly() -> None:
    broker = FakeBroker()
    for _ in range(30):
        raw(broker, 0, ["a", "b", "c", "d"], tenant="t1")
        raw(broker, 0, ["e", "f"], tenant="t2")
    window = await resolve_window(broker, "raw", OffsetWindow({0: (0, None)}))
    plan = await plan_replay(broker, window, "t1", sample_per_partition=10)
    assert plan.messages == 60 and plan.sampled_messages == 10
    assert plan.estimated_records == 120  # half the messages, four records each
    assert "partition 0: offsets 0-60 (60 messages)" in "\n".join(plan.describe())


def test_provenance_headers_are_dropped_rather_than_breaking_the_size_limit() -> None:
    value = b"x" * 1000
    original = [("tenant", b"t1")]
    added = [(REPLAY_ID, b"r" * 32)]
    roomy = annotate(original, added, drop_prefixes=("replay.",), key=b"t1", value=value, max_message_bytes=2000)
    assert dict(roomy)[REPLAY_ID] == b"r" * 32
    limit = message_size(b"t1", value, original)
    tight = annotate(original, added, drop_prefixes=("replay.",), key=b"t1", value=value, max_message_bytes=limit)
    assert tight == original
