"""Raw OTLP metric batch -> usage points, and the arithmetic that turns each point into the usage it adds.

Pure functions: no I/O, so the temporality rules are tested on their own.

Claude Code exports counters (OTLP ``sum``, monotonic). With delta temporality (Claude Code's default) each
point *is* the usage since the previous export. With cumulative temporality each point is the running
total since the series' start time; the usage a point adds is its value minus the previous value of the
same run. A new start time (the CLI restarted) or a lower value (a counter reset) begins a new run, whose
first point adds its whole value.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, NumberDataPoint

from shared import otlp
from shared.pii.attributes import WITHHELD, TextRedactor, redact_attributes, redact_value

METRIC_PREFIXES = ("claude_code.", "cowork.", "claude_code_desktop.")
# The usage metrics Claude Code documents, without the product prefix; and which attribute subdivides each.
KIND_ATTRIBUTE: Mapping[str, str | None] = {
    "cost.usage": None,
    "token.usage": "type",
    "session.count": None,
    "lines_of_code.count": "type",
    "commit.count": None,
    "pull_request.count": None,
    "code_edit_tool.decision": "decision",
    "active_time.total": "type",
}
DELTA = "delta"
CUMULATIVE = "cumulative"


@dataclass(frozen=True)
class UsagePoint:
    series_id: str
    metric: str
    temporality: str
    start_ns: int
    time_ns: int
    value: float
    user_id: str | None
    user_email: str | None
    session_id: str
    model: str
    kind: str
    tool_name: str | None
    attributes: dict[str, Any]

    @property
    def user_key(self) -> str:
        """The reports' one notion of a user: the e-mail when known, else Claude Code's user.id."""
        return self.user_email or self.user_id or ""


@dataclass
class DecodeStats:
    points: int = 0
    skipped_metrics: int = 0
    skipped_points: int = 0


def _any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        # UTF-8 text is kept as text, so redaction can read it; other bytes are withheld, never hex.
        try:
            return value.bytes_value.decode("utf-8")
        except UnicodeDecodeError:
            return f"[{len(value.bytes_value)} bytes withheld: not UTF-8 text]"
    return getattr(value, kind)


def attributes_of(pairs: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in pairs}


def as_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def short_name(name: str) -> str | None:
    for prefix in METRIC_PREFIXES:
        if name.startswith(prefix) and name[len(prefix):] in KIND_ATTRIBUTE:
            return name[len(prefix):]
    return None


def series_id(name: str, scope: str, resource: Mapping[str, Any], attributes: Mapping[str, Any]) -> str:
    """A stable identity for one time series: metric, scope, resource and point attributes."""
    identity = json.dumps([name, scope, sorted(resource.items()), sorted(attributes.items())],
                          sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(identity.encode()).hexdigest()


def _value(point: NumberDataPoint) -> float | None:
    kind = point.WhichOneof("value")
    if kind == "as_double":
        return point.as_double if math.isfinite(point.as_double) else None
    if kind == "as_int":
        return float(point.as_int)
    return None


def decode_points(payload: bytes, content_type: str, stats: DecodeStats | None = None) -> Iterator[UsagePoint]:
    """Usage points of one raw message; raises otlp.PayloadError for a body that is not a metrics export."""
    stats = stats if stats is not None else DecodeStats()
    encoding = otlp.media_type(content_type)
    if encoding is None:
        raise otlp.PayloadError(f"unknown content type {content_type!r}")
    request = otlp.decode_request(payload, encoding, otlp.ExportMetricsServiceRequest)
    for resource_metrics in request.resource_metrics:
        resource = attributes_of(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope.name
            for metric in scope_metrics.metrics:
                name = short_name(metric.name)
                # Only counters carry usage; a gauge or histogram under a usage name is not ours to sum.
                if name is None or metric.WhichOneof("data") != "sum":
                    stats.skipped_metrics += 1
                    continue
                temporality = DELTA if metric.sum.aggregation_temporality == \
                    AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA else CUMULATIVE
                kind_attribute = KIND_ATTRIBUTE[name]
                for point in metric.sum.data_points:
                    value = _value(point)
                    if value is None or point.time_unix_nano == 0:
                        stats.skipped_points += 1
                        continue
                    attrs = attributes_of(point.attributes)
                    stats.points += 1
                    yield UsagePoint(
                        series_id=series_id(metric.name, scope, resource, attrs),
                        metric=name,
                        temporality=temporality,
                        start_ns=int(point.start_time_unix_nano),
                        time_ns=int(point.time_unix_nano),
                        value=value,
                        user_id=as_str(attrs.get("user.id") or resource.get("user.id")),
                        user_email=as_str(attrs.get("user.email") or resource.get("user.email")),
                        session_id=as_str(attrs.get("session.id")) or "",
                        model=as_str(attrs.get("model")) or "",
                        kind=(as_str(attrs.get(kind_attribute)) or "") if kind_attribute else "",
                        tool_name=as_str(attrs.get("tool_name")),
                        attributes={**{f"resource.{k}": v for k, v in resource.items()}, **attrs},
                    )


# What a promoted string column must look like to be kept when detection is unavailable (fail closed).
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@\[\]-]{0,127}")


def _column(engine: TextRedactor | None, value: str | None, counts: Counter[str]) -> str | None:
    if not value:
        return value
    masked = redact_value(engine, value, counts)
    if masked == WITHHELD:
        return value if _IDENTIFIER.fullmatch(value) else WITHHELD
    return str(masked)


def redacted_point(engine: TextRedactor | None, point: UsagePoint, counts: Counter[str] | None = None) -> UsagePoint:
    """The point with its resource and data-point attributes and its string columns redacted like log content
    (keys too). The series id is a digest of the raw attributes and reveals none of them. user_email is the
    user's identity by design, as in audit_logs."""
    counts = counts if counts is not None else Counter()
    return replace(
        point,
        attributes=redact_attributes(engine, point.attributes, counts),
        user_id=_column(engine, point.user_id, counts),
        session_id=_column(engine, point.session_id, counts) or "",
        model=_column(engine, point.model, counts) or "",
        kind=_column(engine, point.kind, counts) or "",
        tool_name=_column(engine, point.tool_name, counts),
    )


@dataclass(frozen=True)
class SeriesState:
    """Where a cumulative series stands: the run (start time) and its last point."""

    start_ns: int
    last_time_ns: int
    last_value: float


def cumulative_delta(state: SeriesState | None, start_ns: int, time_ns: int,
                     value: float) -> tuple[float, SeriesState | None]:
    """The usage a cumulative point adds, and the series' state after it.

    - first point of a series, or of a new run (a later start time): its whole value;
    - a later point of the same run: the increase since the last point;
    - a lower value in the same run (a reset the exporter did not mark with a new start time): its whole value;
    - a point not after the last one of its run (a duplicate, or late) adds nothing: the later point's total
      already contains it;
    - a point of an earlier run than the one being followed (late after a restart) adds nothing: counting it
      could count usage twice, and its run's later points were already counted.
    """
    if state is None or start_ns > state.start_ns:
        return value, SeriesState(start_ns, time_ns, value)
    if start_ns < state.start_ns or time_ns <= state.last_time_ns:
        return 0.0, state
    if value < state.last_value:
        return value, SeriesState(start_ns, time_ns, value)
    return value - state.last_value, SeriesState(start_ns, time_ns, value)
