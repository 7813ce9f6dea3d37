"""The Grafana dashboard and the Prometheus alerts query only metrics the code really exports, and the
committed dashboard JSON is what deploy/grafana/dashboard.py builds."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from prometheus_client import CollectorRegistry

from deploy.grafana.dashboard import DASHBOARD, render
from services.auditctl.ops.exporter import DeadLetterMetrics
from services.receiver.metrics import ReceiverMetrics
from services.redactor.worker import RedactorMetrics
from services.signer.worker import SignerMetrics
from tests.deploy.conftest import ROOT

PROMQL_WORDS = {
    # functions and aggregations used, keywords, and modifiers
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "delta", "deriv", "histogram_quantile",
    "time", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset",
    "bool", "abs", "clamp_min", "topk", "bottomk", "label_replace", "vector", "scalar",
}


def exported_metric_names() -> set[str]:
    """Every sample name the services' metric classes expose (with _total, _bucket, ... suffixes)."""
    names: set[str] = set()
    for metrics_class in (ReceiverMetrics, RedactorMetrics, SignerMetrics, DeadLetterMetrics):
        registry = CollectorRegistry()
        metrics_class(registry)
        for family in registry.collect():
            names.add(family.name)
            kind = family.type
            suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_count", "_sum", "_created"],
                        "summary": ["_count", "_sum", "_created"]}.get(kind, [])
            names.update(family.name + suffix for suffix in suffixes)
    return names


def metric_names_in(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that are neither functions, keywords, labels nor durations."""
    stripped = re.sub(r'"[^"]*"', "", expr)               # string literals
    stripped = re.sub(r"\{[^}]*\}", "", stripped)         # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)        # range durations, $__rate_interval
    stripped = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", stripped)  # label lists
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped))
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]?", w)}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_metric_name_extraction() -> None:
    assert metric_names_in('sum by (reason) (rate(x_total{reason!="a"}[5m])) > 0 and y') == {"x_total", "y"}
    assert metric_names_in("histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))") == {"h_bucket"}


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_queried_metric_exists_in_the_code(source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    assert exprs
    queried = set().union(*(metric_names_in(e) for e in exprs))
    missing = queried - exported_metric_names()
    assert not missing, f"{source} queries metrics no service exports: {sorted(missing)}"


def test_dashboard_covers_the_operational_questions() -> None:
    text = " ".join(dashboard_exprs())
    for needed in ("otelcol_receiver_accepted_log_records_total", "otelcol_receiver_refused_log_records_total",
                   "redactor_consumer_lag", "signer_consumer_lag", "audit_deadletter_unrequeued_messages",
                   "signer_rows_appended_total", "signer_append_duration_seconds_bucket",
                   "redactor_redactions_total", "redactor_withheld_fields_total"):
        assert needed in text, needed


def test_committed_dashboard_is_what_the_builder_makes() -> None:
    assert DASHBOARD.read_text() == render(), "run: python -m deploy.grafana.dashboard --write"
