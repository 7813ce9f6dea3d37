"""Builds the Grafana dashboard from the metric names the services export; the JSON is committed.

Usage: python -m deploy.grafana.dashboard [--write]   (tests/deploy checks the JSON is current and that every
metric it queries exists in the code)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).parent / "dashboards" / "claude-audit-ingest.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "[$__rate_interval]"


def _panel(title: str, exprs: list[tuple[str, str]], *, kind: str = "timeseries", unit: str = "short",
           description: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


ROWS: list[tuple[str, list[dict[str, Any]]]] = [
    ("Ingest (receiver)", [
        _panel("Accepted log records /s by tenant",
               [(f"sum by (tenant) (rate(otelcol_receiver_accepted_log_records_total{RATE}))", "{{tenant}}")],
               unit="ops"),
        _panel("Refused log records /s by reason",
               [("sum by (reason) (rate(otelcol_receiver_refused_log_records_total[$__rate_interval]))", "{{reason}}"),
                ("sum by (reason) (rate(otelcol_receiver_refused_requests_total[$__rate_interval]))",
                 "requests: {{reason}}")],
               unit="ops", description="rate_limited is the client's retry signal; broker_unavailable is ours."),
        _panel("Request latency p99 by route",
               [("histogram_quantile(0.99, sum by (le, http_route) "
                 "(rate(http_server_request_duration_seconds_bucket[$__rate_interval])))", "{{http_route}}")],
               unit="s"),
        _panel("Produce (enqueue) latency p50 / p99",
               [("histogram_quantile(0.5, sum by (le) "
                 "(rate(otelcol_receiver_enqueue_duration_seconds_bucket[$__rate_interval])))", "p50"),
                ("histogram_quantile(0.99, sum by (le) "
                 "(rate(otelcol_receiver_enqueue_duration_seconds_bucket[$__rate_interval])))", "p99")],
               unit="s"),
        _panel("Broker reachable (per receiver)", [("min(otelcol_receiver_broker_available)", "available")],
               kind="stat"),
        _panel("In-flight bytes vs limit",
               [("sum(otelcol_receiver_in_flight_bytes)", "in flight"),
                ("sum(otelcol_receiver_in_flight_limit_bytes)", "limit")], unit="bytes"),
    ]),
    ("Redaction (redactor)", [
        _panel("Records in / events out /s",
               [("sum(rate(redactor_records_in_total[$__rate_interval]))", "records in"),
                ("sum(rate(redactor_events_out_total[$__rate_interval]))", "events out"),
                ("sum(rate(redactor_dropped_other_events_total[$__rate_interval]))", "dropped by policy")],
               unit="ops"),
        _panel("Redactions /s by entity type",
               [("sum by (entity) (rate(redactor_redactions_total[$__rate_interval]))", "{{entity}}")], unit="ops"),
        _panel("Content withheld /s (detection unavailable)",
               [("sum(rate(redactor_withheld_fields_total[$__rate_interval]))", "withheld fields")], unit="ops"),
    ]),
    ("Consumer lag", [
        _panel("Redactor lag by partition (raw topic)",
               [("max by (partition) (redactor_consumer_lag)", "partition {{partition}}")],
               description="KEDA scales the redactor on this lag, up to one replica per partition."),
        _panel("Signer lag by partition (canonical topic)",
               [("max by (partition) (signer_consumer_lag)", "partition {{partition}}")]),
    ]),
    ("Dead letters", [
        _panel("Dead letters not requeued, by stage",
               [("sum by (stage) (audit_deadletter_unrequeued_messages)", "{{stage}}")],
               description="Alert: above zero for 10 minutes. auditctl dlq list / inspect / requeue."),
        _panel("Oldest unrequeued dead letter", [("max(audit_deadletter_oldest_unrequeued_age_seconds)", "age")],
               kind="stat", unit="s"),
        _panel("New dead letters /s by stage",
               [("sum(rate(redactor_dead_lettered_total[$__rate_interval]))", "redactor"),
                ("sum(rate(signer_dead_lettered_total[$__rate_interval]))", "signer"),
                ("sum(deriv(audit_deadletter_end_offset[$__rate_interval]))", "topic (all stages)")], unit="ops"),
        _panel("Exporter freshness",
               [("time() - max(audit_deadletter_last_scan_timestamp_seconds)", "seconds since scan"),
                (f"sum(rate(audit_deadletter_scan_errors_total{RATE}))", "scan errors /s")], unit="s"),
    ]),
    ("Signer and chains", [
        _panel("Rows appended /s, duplicates and stale skipped /s",
               [("sum(rate(signer_rows_appended_total[$__rate_interval]))", "appended"),
                ("sum(rate(signer_duplicates_skipped_total[$__rate_interval]))", "duplicates skipped"),
                ("sum(rate(signer_stale_messages_total[$__rate_interval]))", "stale (another signer applied)")],
               unit="ops"),
        _panel("Append (commit) transaction latency p50 / p99",
               [(f"histogram_quantile(0.5, sum by (le) (rate(signer_append_duration_seconds_bucket{RATE})))", "p50"),
                (f"histogram_quantile(0.99, sum by (le) (rate(signer_append_duration_seconds_bucket{RATE})))", "p99")],
               unit="s"),
        _panel("Chain status: PostgreSQL retries and signer dead letters /s",
               [("sum(rate(signer_db_retries_total[$__rate_interval]))", "db retries"),
                ("sum(rate(signer_dead_lettered_total[$__rate_interval]))", "dead-lettered events")], unit="ops",
               description="Chains are verified end to end with `auditctl verify`; any dead-lettered event is an "
                           "event not on its chain yet."),
    ]),
]


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for title, row_panels in ROWS:
        panels.append({"type": "row", "title": title, "id": next_id, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        for i, panel in enumerate(row_panels):
            width = 8 if panel["type"] == "timeseries" else 4
            position = {"h": 8, "w": width, "x": (i % 3) * 8, "y": y + (i // 3) * 8}
            panels.append({**panel, "id": next_id, "gridPos": position})
            next_id += 1
        y += 8 * ((len(row_panels) + 2) // 3)
    return {
        "uid": "claude-audit-ingest",
        "title": "Claude audit ingest",
        "tags": ["claude-audit-ingest"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        DASHBOARD.write_text(render())
    else:
        print(render(), end="")
