"""Prometheus metrics, named after the OpenTelemetry Collector's receiver metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ReceiverMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = Counter(
            "otelcol_receiver_accepted_log_records",
            "Log records accepted and acknowledged by the broker.",
            ["tenant"],
            registry=registry,
        )
        self.refused = Counter(
            "otelcol_receiver_refused_log_records",
            "Log records refused, by reason.",
            ["tenant", "reason"],
            registry=registry,
        )
        self.accepted_points = Counter(
            "otelcol_receiver_accepted_metric_points",
            "Metric data points accepted and acknowledged by the broker.",
            ["tenant"],
            registry=registry,
        )
        self.refused_points = Counter(
            "otelcol_receiver_refused_metric_points",
            "Metric data points refused, by reason.",
            ["tenant", "reason"],
            registry=registry,
        )
        self.requests = Counter(
            "receiver_requests", "HTTP requests answered, by route and status.", ["route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "receiver_request_duration_seconds",
            "Time from request start to answer.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.in_flight_bytes = Gauge(
            "receiver_in_flight_bytes", "Request bytes being read or enqueued now.", registry=registry
        )
        self.produce_latency = Histogram(
            "receiver_produce_duration_seconds",
            "Time for the broker to acknowledge one request's messages.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
