"""Hand-built OTLP metric exports, for the temporality cases the real capture (delta only) does not show."""

from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

SECOND = 1_000_000_000
BASE = 1_795_878_787 * SECOND  # 2026-11-28, the day of the real capture


def export(name: str, points: list[tuple[int, int, float]], *, cumulative: bool, user: str = "u-1",
           session: str = "s-1", extra: dict[str, str] | None = None) -> ExportMetricsServiceRequest:
    """``points``: (start offset s, time offset s, value) relative to BASE."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="claude-code")))
    sm = rm.scope_metrics.add()
    sm.scope.name = "com.anthropic.claude_code"
    metric = sm.metrics.add()
    metric.name = name
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = (AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE if cumulative
                                          else AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA)
    for start, at, value in points:
        point = metric.sum.data_points.add()
        point.start_time_unix_nano = BASE + start * SECOND
        point.time_unix_nano = BASE + at * SECOND
        point.as_double = value
        for key, text in {"user.id": user, "session.id": session, **(extra or {})}.items():
            point.attributes.append(KeyValue(key=key, value=AnyValue(string_value=text)))
    return request
