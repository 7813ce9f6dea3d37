# ruff: noqa: S704 - every text interpolated into the markup is escaped first; numbers are formatted.
"""Charts as inline SVG, rendered on the server: no script, no CDN, nothing fetched by the browser.

Every text that reaches the SVG is escaped. Each chart carries ``data-chart`` and each mark ``data-value``,
so tests (and people with a DOM inspector) can read the figures back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

PALETTE = ("#3b6ea5", "#e08a2e", "#4f9d69", "#b8514f", "#7d62a8", "#8c6d46", "#c76fae", "#6f7782")
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _fmt(value: float) -> str:
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if abs(value) >= 10_000:
        return f"{value / 1_000:.0f}k"
    if abs(value) >= 1_000:
        return f"{value / 1_000:.1f}k"
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def dollars(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.4f}"


def _empty(name: str, title: str, width: int) -> Markup:
    return Markup(
        f'<svg class="chart" data-chart="{escape(name)}" data-points="0" role="img" width="{width}" height="40"'
        f' viewBox="0 0 {width} 40" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        f'<text x="8" y="24" {_FONT} fill="#666">No data in this window.</text></svg>'
    )


def horizontal_bars(name: str, title: str, items: Sequence[tuple[str, float]], *,
                    label: Callable[[float], str] = _fmt, width: int = 640) -> Markup:
    """One bar per item, longest first as given; for "cost per user" and the like."""
    if not items:
        return _empty(name, title, width)
    row, label_width, value_width = 22, 200, 80
    plot = width - label_width - value_width
    peak = max(value for _, value in items) or 1.0
    height = row * len(items) + 8
    parts = [
        f'<svg class="chart" data-chart="{escape(name)}" data-points="{len(items)}" role="img" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>"
    ]
    for index, (key, value) in enumerate(items):
        y = 4 + index * row
        bar = max(1.0, plot * value / peak) if value > 0 else 0.0
        short = key if len(key) <= 26 else key[:25] + "…"
        parts.append(
            f'<text x="{label_width - 6}" y="{y + 15}" text-anchor="end" {_FONT}>{escape(short)}</text>'
            f'<rect class="bar" data-key="{escape(key)}" data-value="{value:.6f}" x="{label_width}" y="{y + 3}"'
            f' width="{bar:.1f}" height="{row - 6}" fill="{PALETTE[0]}"><title>{escape(key)}: {escape(label(value))}'
            f"</title></rect>"
            f'<text x="{label_width + bar + 4:.1f}" y="{y + 15}" {_FONT}>{escape(label(value))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def stacked_columns(name: str, title: str, categories: Sequence[str], series: Sequence[tuple[str, Sequence[float]]],
                    *, width: int = 640, height: int = 260) -> Markup:
    """One column per category, stacked by series; for "tokens by model" split by token type."""
    totals = [sum(values[i] for _, values in series) for i in range(len(categories))]
    if not categories or not any(totals):
        return _empty(name, title, width)
    left, bottom, top, legend = 56, 40, 10, 110
    plot_w, plot_h = width - left - legend - 10, height - bottom - top
    peak = max(totals) or 1.0
    slot = plot_w / len(categories)
    column = min(60.0, slot * 0.7)
    parts = [
        f'<svg class="chart" data-chart="{escape(name)}" data-points="{len(categories)}" role="img" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>',
        f'<text x="{left - 6}" y="{top + 8}" text-anchor="end" {_FONT}>{escape(_fmt(peak))}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" {_FONT}>0</text>',
    ]
    for index, category in enumerate(categories):
        x = left + index * slot + (slot - column) / 2
        y = float(top + plot_h)
        for colour, (series_name, values) in zip(PALETTE, series, strict=False):
            value = values[index]
            if value <= 0:
                continue
            h = plot_h * value / peak
            y -= h
            parts.append(
                f'<rect class="bar" data-key="{escape(category)}" data-series="{escape(series_name)}"'
                f' data-value="{value:.0f}" x="{x:.1f}" y="{y:.1f}" width="{column:.1f}" height="{h:.1f}"'
                f' fill="{colour}"><title>{escape(category)} {escape(series_name)}: {escape(_fmt(value))}</title>'
                "</rect>"
            )
        short = category if len(category) <= 18 else category[:17] + "…"
        parts.append(f'<text x="{x + column / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle" {_FONT}>'
                     f"{escape(short)}</text>")
    for index, (colour, (series_name, _)) in enumerate(zip(PALETTE, series, strict=False)):
        y = top + index * 18
        parts.append(f'<rect x="{width - legend}" y="{y}" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{width - legend + 18}" y="{y + 10}" {_FONT}>{escape(series_name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def line(name: str, title: str, points: Sequence[tuple[str, float]], *, label: Callable[[float], str] = _fmt,
         width: int = 640, height: int = 220) -> Markup:
    """A value over ordered categories (days); for "cost over time"."""
    if not points:
        return _empty(name, title, width)
    left, bottom, top, right = 64, 36, 12, 16
    plot_w, plot_h = width - left - right, height - bottom - top
    peak = max(value for _, value in points) or 1.0
    step = plot_w / max(1, len(points) - 1)
    coords = [(left + (i * step if len(points) > 1 else plot_w / 2), top + plot_h - plot_h * v / peak)
              for i, (_, v) in enumerate(points)]
    parts = [
        f'<svg class="chart" data-chart="{escape(name)}" data-points="{len(points)}" role="img" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>',
        f'<text x="{left - 6}" y="{top + 8}" text-anchor="end" {_FONT}>{escape(label(peak))}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" {_FONT}>{escape(label(0))}</text>',
        '<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
            PALETTE[0], " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)),
    ]
    for (key, value), (x, y) in zip(points, coords, strict=True):
        parts.append(f'<circle class="point" data-key="{escape(key)}" data-value="{value:.6f}" cx="{x:.1f}"'
                     f' cy="{y:.1f}" r="3" fill="{PALETTE[1]}"><title>{escape(key)}: {escape(label(value))}</title>'
                     f"</circle>")
    ticks = {0, len(points) - 1, (len(points) - 1) // 2}
    for index in sorted(ticks):
        x = coords[index][0]
        # The outermost labels hang inwards, so they are never cut off at the chart's edges.
        anchor = "middle"
        if len(points) > 1 and index == 0:
            anchor = "start"
        elif len(points) > 1 and index == len(points) - 1:
            anchor = "end"
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="{anchor}" {_FONT}>'
                     f"{escape(points[index][0])}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))
