"""Resolving a replay window to offsets: Apache Kafka's offsets-for-times answers are used as they are; answers
that break Kafka's contract (as Tansu gives: offset 0, timestamp -1) fall back to a search; both agree."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.auditctl.ops.window import (
    OffsetWindow,
    PartitionRange,
    TimeWindow,
    parse_offset_ranges,
    parse_timestamp,
    resolve_window,
)
from tests.unit.ops.fakes import FakeBroker

T0 = 1_800_000_000_000  # ms


ANSWERS = ["kafka", "zero-unknown", "zero-now"]


def _broker(answers: str) -> FakeBroker:
    broker = FakeBroker(answers=answers)
    for i in range(10):  # partition 0: one message a second
        broker.add("raw", 0, T0 + i * 1000)
    for i in range(3):  # partition 1: three messages, all early
        broker.add("raw", 1, T0 + i * 10)
    broker.ensure_partition("raw", 2)  # partition 2: empty
    return broker


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@pytest.mark.parametrize("answers", ANSWERS)
async def test_time_window_resolves_to_the_same_offsets_whatever_the_broker_answers(answers: str) -> None:
    broker = _broker(answers)
    resolved = await resolve_window(broker, "raw", TimeWindow(_at(T0 + 2500), _at(T0 + 6000)))
    assert resolved.ranges == (PartitionRange(0, 3, 6), PartitionRange(1, 3, 3), PartitionRange(2, 0, 0))
    assert resolved.messages == 3


@pytest.mark.parametrize("answers", ANSWERS)
async def test_open_window_runs_to_the_end_at_planning_time_and_before_everything_starts_at_zero(
        answers: str) -> None:
    broker = _broker(answers)
    resolved = await resolve_window(broker, "raw", TimeWindow(_at(T0 - 60_000)))
    assert resolved.ranges == (PartitionRange(0, 0, 10), PartitionRange(1, 0, 3), PartitionRange(2, 0, 0))
    after_everything = await resolve_window(broker, "raw", TimeWindow(_at(T0 + 60_000)))
    assert after_everything.messages == 0
    broker.add("raw", 0, T0 + 99_000)  # written after planning: not part of the plan already made
    assert resolved.ranges[0].end == 10


async def test_a_kafka_answer_is_checked_with_a_few_reads_not_searched() -> None:
    broker = _broker("kafka")
    await resolve_window(broker, "raw", TimeWindow(_at(T0 + 2500)))
    assert broker.reads <= 3  # partition 0: the answered message and the one before; partition 1: its last


async def test_timestamps_out_of_order_still_give_kafkas_earliest_offset() -> None:
    broker = FakeBroker()
    for ts in (T0, T0 + 5000, T0 + 1000, T0 + 6000):  # two producers with skewed clocks
        broker.add("raw", 0, ts)
    resolved = await resolve_window(broker, "raw", TimeWindow(_at(T0 + 2000)))
    assert resolved.ranges == (PartitionRange(0, 1, 4),)


async def test_offset_window_is_clamped_to_what_is_retained_and_says_so() -> None:
    broker = _broker("kafka")
    broker.topics["raw"].begin[0] = 4
    resolved = await resolve_window(broker, "raw", parse_offset_ranges(["0:2-8", "1:1-"]))
    assert resolved.ranges == (PartitionRange(0, 4, 8), PartitionRange(1, 1, 3))
    assert any("no longer retained" in note for note in resolved.notes)
    beyond = await resolve_window(broker, "raw", OffsetWindow({1: (0, 50)}))
    assert beyond.ranges == (PartitionRange(1, 0, 3),) and "ends at 3" in beyond.notes[0]
    with pytest.raises(ValueError, match="no partition 7"):
        await resolve_window(broker, "raw", OffsetWindow({7: (0, None)}))


def test_offset_specs_parse_or_fail_clearly() -> None:
    assert parse_offset_ranges(["0:100-200", "3:5-"]).ranges == {0: (100, 200), 3: (5, None)}
    for bad in (["0:5"], ["x:1-2"], ["0:9-3"], ["0:1-2", "0:3-4"], []):
        with pytest.raises(ValueError):
            parse_offset_ranges(bad)


def test_timestamps_are_iso_or_epoch_millis_and_utc_by_default() -> None:
    assert parse_timestamp("2026-03-01T10:00:00Z") == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert parse_timestamp("2026-03-01T10:00:00") == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert parse_timestamp("2026-03-01T12:00:00+02:00") == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert parse_timestamp("1772359200000") == datetime(2026, 3, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_timestamp("yesterday")


async def test_window_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError):
        await resolve_window(_broker("kafka"), "raw", TimeWindow(_at(T0 + 5000), _at(T0)))
