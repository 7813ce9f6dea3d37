"""Metric decoding on the real capture, and the cumulative/delta arithmetic on its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import json_format

from services.usage.points import (
    CUMULATIVE,
    DELTA,
    DecodeStats,
    SeriesState,
    cumulative_delta,
    decode_points,
)
from shared import otlp
from tests.unit.reporter.metric_payloads import export


def test_the_real_capture_becomes_usage_points(fixtures_dir: Path) -> None:
    stats = DecodeStats()
    points = list(decode_points((fixtures_dir / "metrics-tool-session.pb").read_bytes(), otlp.PROTOBUF, stats))
    by_metric = {(p.metric, p.kind): p for p in points}
    assert set(by_metric) == {
        ("session.count", ""), ("cost.usage", ""), ("token.usage", "input"), ("token.usage", "output"),
        ("token.usage", "cacheRead"), ("token.usage", "cacheCreation"), ("active_time.total", "cli"),
    }
    assert all(p.temporality == DELTA for p in points)
    assert by_metric[("cost.usage", "")].value == pytest.approx(0.0137)
    assert by_metric[("token.usage", "input")].model == "claude-opus-5-5"
    assert {p.session_id for p in points} == {"9c82ae41-69ad-4e74-85a8-70cc8c88f69c"}
    assert {p.user_key for p in points} == {"549194b3250c8d36100b151a3a002230bbebfe2166dd98d789007d94f7b8653f"}
    assert len({p.series_id for p in points}) == 7
    assert stats.points == 7 and stats.skipped_metrics == 0


def test_json_encoding_decodes_to_the_same_points() -> None:
    request = export("claude_code.lines_of_code.count", [(0, 10, 12)], cumulative=True, extra={"type": "added"})
    as_json = json.dumps(json_format.MessageToDict(request)).encode()
    [from_json] = decode_points(as_json, otlp.JSON)
    [from_proto] = decode_points(request.SerializeToString(), otlp.PROTOBUF)
    assert from_json == from_proto
    assert (from_json.metric, from_json.kind, from_json.temporality, from_json.value) == (
        "lines_of_code.count", "added", CUMULATIVE, 12.0)


def test_other_metrics_and_bad_bodies() -> None:
    stats = DecodeStats()
    other = export("http.server.duration", [(0, 1, 5)], cumulative=False)
    assert list(decode_points(other.SerializeToString(), otlp.PROTOBUF, stats)) == []
    assert stats.skipped_metrics == 1
    with pytest.raises(otlp.PayloadError):
        list(decode_points(b"\x0a\xff\xff", otlp.PROTOBUF))
    with pytest.raises(otlp.PayloadError):
        list(decode_points(b"{}", "text/plain"))


def _run(points: list[tuple[int, int, float]]) -> float:
    state: SeriesState | None = None
    total = 0.0
    for start, at, value in points:
        delta, state = cumulative_delta(state, start, at, value)
        total += delta
    return total


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([(0, 10, 100)], 100),  # the first point of a series counts whole
        ([(0, 10, 100), (0, 20, 250), (0, 30, 260)], 260),  # increases
        ([(0, 10, 100), (0, 20, 250), (0, 20, 250), (0, 20, 250)], 250),  # duplicates add nothing
        ([(0, 10, 100), (0, 30, 250), (0, 20, 180)], 250),  # a late point is inside the later total
        ([(0, 10, 100), (0, 20, 250), (0, 30, 40)], 290),  # a drop without a new start: a reset
        ([(0, 10, 100), (0, 20, 250), (25, 30, 40)], 290),  # a new start time: a new run
        ([(0, 10, 100), (25, 30, 40), (0, 35, 999)], 140),  # a late point of the old run adds nothing
        ([(0, 10, 100), (10, 20, 5), (20, 30, 7)], 112),  # a delta stream mislabelled cumulative still adds up
    ],
)
def test_cumulative_deltas(points: list[tuple[int, int, float]], expected: float) -> None:
    assert _run(points) == pytest.approx(expected)
