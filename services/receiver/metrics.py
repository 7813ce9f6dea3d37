"""Prometheus metrics, named after the OpenTelemetry Collector's own receiver metrics.

``otelcol_receiver_accepted_log_records`` / ``otelcol_receiver_refused_log_records`` (and the metric-point
pair) carry the Collector's ``receiver`` and ``transport`` labels plus ``tenant`` and, for refusals,
``reason``. Request latency follows the OpenTelemetry HTTP semantic conventions
(``http.server.request.duration`` -> ``http_server_request_duration_seconds``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RECEIVER = "otlp"
TRANSPORT = "http"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ReceiverMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._accepted = {
            "logs": Counter(
                "otelcol_receiver_accepted_log_records",
                "Log records the broker acknowledged.",
                ["receiver", "transport", "tenant"],
                registry=registry,
            ),
            "metrics": Counter(
                "otelcol_receiver_accepted_metric_points",
                "Metric data points the broker acknowledged.",
                ["receiver", "transport", "tenant"],
                registry=registry,
            ),
        }
        self._refused = {
            "logs": Counter(
                "otelcol_receiver_refused_log_records",
                "Log records refused, by reason (rate_limited, broker_unavailable, too_large, ...).",
                ["receiver", "transport", "tenant", "reason"],
                registry=registry,
            ),
            "metrics": Counter(
                "otelcol_receiver_refused_metric_points",
                "Metric data points refused, by reason.",
                ["receiver", "transport", "tenant", "reason"],
                registry=registry,
            ),
        }
        # labels() costs a few microseconds; the accepted counter is touched on every request.
        self._accepted_children: dict[tuple[str, str], Any] = {}
        self._duration_children: dict[tuple[str, int], Any] = {}
        self.refused_requests = Counter(
            "otelcol_receiver_refused_requests",
            "Requests answered with an error, by route and reason; counts refusals whose records were never decoded.",
            ["http_route", "reason"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "http_server_request_duration_seconds",
            "Time from the start of a request to its answer.",
            ["http_route", "http_response_status_code"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.enqueue_duration = Histogram(
            "otelcol_receiver_enqueue_duration_seconds",
            "Time for the broker to acknowledge one request's messages.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight_bytes = Gauge(
            "otelcol_receiver_in_flight_bytes",
            "Decompressed request bytes held now (being read, decoded or awaiting the broker's acknowledgement).",
            registry=registry,
        )
        self.in_flight_limit_bytes = Gauge(
            "otelcol_receiver_in_flight_limit_bytes", "The in-flight byte limit (503 above).", registry=registry
        )
        self.broker_available = Gauge(
            "otelcol_receiver_broker_available",
            "1 while the broker acknowledges sends, 0 while requests are answered 503 without trying it.",
            registry=registry,
        )

    def accepted(self, signal: str, tenant: str, count: int) -> None:
        if count:
            child = self._accepted_children.get((signal, tenant))
            if child is None:
                child = self._accepted_children[(signal, tenant)] = self._accepted[signal].labels(
                    RECEIVER, TRANSPORT, tenant)
            child.inc(count)

    def request_done(self, route: str, status: int, seconds: float) -> None:
        """Every answer's latency; routes are a fixed set and statuses few, so the children are kept."""
        child = self._duration_children.get((route, status))
        if child is None:
            child = self._duration_children[(route, status)] = self.request_duration.labels(route, str(status))
        child.observe(seconds)

    def refused(self, signal: str, tenant: str, reason: str, count: int) -> None:
        if count:
            self._refused[signal].labels(RECEIVER, TRANSPORT, tenant, reason).inc(count)

    def watch(self, in_flight: Callable[[], float], limit: float, broker_available: Callable[[], float]) -> None:
        """Gauges read their value at scrape time, so the hot path never updates them."""
        self.in_flight_bytes.set_function(in_flight)
        self.in_flight_limit_bytes.set(limit)
        self.broker_available.set_function(broker_available)
