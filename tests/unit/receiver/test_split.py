"""Splitting requests for the Kafka message limit: every record once, in order, each chunk within the limit."""

from __future__ import annotations

import itertools
import random

import pytest

from shared import otlp
from tests.unit.receiver.payloads import metric_request


def random_request(rng: random.Random) -> otlp.ExportLogsServiceRequest:
    request = otlp.ExportLogsServiceRequest()
    sequence = 0
    for _ in range(rng.randint(1, 4)):
        rl = request.resource_logs.add()
        if rng.random() < 0.8:
            attribute = rl.resource.attributes.add()
            attribute.key, attribute.value.string_value = "service.name", "claude-code" * rng.randint(1, 30)
        if rng.random() < 0.3:
            rl.schema_url = "https://opentelemetry.io/schemas/" + "1" * rng.randint(0, 300)
        for _ in range(rng.randint(0, 3)):
            sl = rl.scope_logs.add()
            if rng.random() < 0.7:
                sl.scope.name = "com.anthropic.claude_code.events"
            for _ in range(rng.randint(0, 40)):
                record = sl.log_records.add()
                record.body.string_value = f"record {sequence} " + "x" * rng.choice([0, 10, 500, 3000, 70_000])
                sequence += 1
    return request


def bodies(request: otlp.ExportLogsServiceRequest) -> list[str]:
    return [r.body.string_value for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]


@pytest.mark.parametrize("seed", range(40))
def test_split_logs_keeps_every_fitting_record_in_order_within_the_limit(seed: int) -> None:
    rng = random.Random(seed)
    request = random_request(rng)
    limit = rng.choice([4_000, 20_000, 100_000, 1_000_000])
    chunks, oversized = otlp.split_logs(request, limit)
    assert all(len(chunk.payload) <= limit for chunk in chunks)
    rebuilt = [otlp.ExportLogsServiceRequest.FromString(chunk.payload) for chunk in chunks]
    assert [otlp.count_log_records(r) for r in rebuilt] == [chunk.record_count for chunk in chunks]
    too_big = {bodies(single)[0] for single in oversized}
    assert all(single.ByteSize() > limit for single in oversized)
    assert [b for r in rebuilt for b in bodies(r)] == [b for b in bodies(request) if b not in too_big]
    # Chunks are reasonably full: merging any two neighbours would break the limit.
    for first, second in itertools.pairwise(chunks):
        assert len(first.payload) + len(second.payload) > limit * 0.5


def test_split_keeps_resource_and_scope_with_each_record() -> None:
    request = random_request(random.Random(7))
    chunks, _ = otlp.split_logs(request, 5_000)
    origin = {r.body.string_value: (rl.resource, sl.scope) for rl in request.resource_logs
              for sl in rl.scope_logs for r in sl.log_records}
    for chunk in chunks:
        part = otlp.ExportLogsServiceRequest.FromString(chunk.payload)
        for rl in part.resource_logs:
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    assert origin[record.body.string_value] == (rl.resource, sl.scope)


def test_split_metrics_counts_data_points_and_reports_oversized_metrics() -> None:
    request = metric_request(6, 4, big_metric_at=3, big_size=50_000)
    chunks, oversized = otlp.split_metrics(request, 10_000)
    assert sum(chunk.record_count for chunk in chunks) == 20
    assert [otlp.count_data_points(single) for single in oversized] == [4]
    assert all(len(chunk.payload) <= 10_000 for chunk in chunks)
    assert list(otlp.iter_metric_chunks(request, 10_000)) == [chunk.payload for chunk in chunks]


def test_keep_first_log_records() -> None:
    request = random_request(random.Random(3))
    total = otlp.count_log_records(request)
    kept = otlp.keep_first_log_records(request, total // 2)
    assert bodies(kept) == bodies(request)[: total // 2]
