"""Server-side SVG charts: figures readable from the markup, every text escaped."""

from __future__ import annotations

import re

from services.reporter import charts


def test_bars_carry_their_values_and_escape_their_labels() -> None:
    svg = str(charts.horizontal_bars("cost-per-user", "Cost <per> user",
                                     [("<script>alert(1)</script>", 2.5), ("bob", 1.25)], label=charts.dollars))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert 'data-chart="cost-per-user"' in svg and 'data-points="2"' in svg
    assert re.findall(r'data-value="([0-9.]+)"', svg) == ["2.500000", "1.250000"]
    widths = [float(w) for w in re.findall(r'class="bar"[^>]*width="([0-9.]+)"', svg)]
    assert widths[0] == 2 * widths[1]  # bars in proportion


def test_stacked_columns_and_lines() -> None:
    svg = str(charts.stacked_columns("tokens", "Tokens", ["opus", "sonnet"],
                                     [("input", [100.0, 10.0]), ("output", [50.0, 0.0])]))
    assert svg.count('class="bar"') == 3  # a zero segment is not drawn
    line = str(charts.line("cost", "Cost", [("2026-11-01", 0.0), ("2026-11-02", 3.0), ("2026-11-03", 1.0)]))
    assert line.count('class="point"') == 3 and "<polyline" in line
    assert 'text-anchor="start"' in line and 'text-anchor="end"' in line  # edge labels stay inside


def test_empty_charts_say_so() -> None:
    assert 'data-points="0"' in str(charts.horizontal_bars("x", "X", []))
    assert "No data" in str(charts.stacked_columns("x", "X", ["a"], [("input", [0.0])]))
    assert "No data" in str(charts.line("x", "X", []))
