"""The reported figures, from aggregated rollup rows (usagesql.py)."""

from __future__ import annotations

from services.reporter import usagesql
from services.reporter.rollup import SUM_COLUMNS
from shared.usage_columns import DAILY_COLUMNS


def test_event_figures_of_a_full_row_and_of_a_model_row() -> None:
    row = dict.fromkeys(SUM_COLUMNS, 0) | {"prompts": 3, "tool_accepts": 3, "tool_rejects": 1, "input_tokens": 10,
                                          "output_tokens": 5, "cost": "0.250000"}
    figures = usagesql.event_figures(row, full=True)
    assert figures["tool_acceptance_rate"] == 0.75 and figures["tokens"]["total"] == 15
    assert figures["cost"] == "0.250000" and figures["prompts"] == 3
    per_model = usagesql.event_figures({"api_calls": 2, "api_errors": 1, "input_tokens": 1, "output_tokens": 1,
                                        "cache_read_tokens": 0, "cache_creation_tokens": 0, "cost": None},
                                       full=False)
    assert per_model["prompts"] is None and per_model["tool_acceptance_rate"] is None
    assert per_model["cost"] == "0.000000" and per_model["errors"] == 1
    assert usagesql.event_figures(None, full=True)["tool_acceptance_rate"] is None


def test_metric_figures_are_null_without_metrics_and_partial_for_models() -> None:
    assert usagesql.metric_figures(None) is None
    assert usagesql.metric_figures(dict.fromkeys(DAILY_COLUMNS, 0)) is None  # no point counted
    full = dict.fromkeys(DAILY_COLUMNS, 0) | {"m_points": 4, "m_cost": "1.500000", "m_lines_added": 12,
                                               "m_active_user_seconds": 1.5, "m_active_cli_seconds": 0.25,
                                               "m_edit_accepts": 1, "m_edit_rejects": 1}
    figures = usagesql.metric_figures(full)
    assert figures is not None
    assert figures["active_time_seconds"] == {"user": 1.5, "cli": 0.25, "total": 1.75}
    assert figures["code_edit_decisions"]["acceptance_rate"] == 0.5 and figures["lines_of_code"]["added"] == 12
    model = usagesql.metric_figures({"m_points": 1, "m_cost": "0.100000", "m_input_tokens": 5, "m_output_tokens": 1,
                                     "m_cache_read_tokens": 0, "m_cache_creation_tokens": 0},
                                    usagesql.METRIC_MODEL_FIGURES)
    assert model is not None and model["lines_of_code"] == {"added": None, "removed": None}
    assert model["tokens"]["total"] == 6
