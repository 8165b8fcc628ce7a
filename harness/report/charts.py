"""Inline SVG charts for the HTML report: plain strings, no JavaScript, no external files, so the
report opens anywhere without a network."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#6b7280", "#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d")
STATUS_COLORS = {"OK": "#16a34a", "SyntaxError": "#f59e0b", "Exception": "#dc2626",
                 "Timeout": "#7c3aed"}
OTHER_STATUS_COLOR = "#94a3b8"


def colors_for(labels: Sequence[str]) -> dict[str, str]:
    """A stable color per series label, in the order given."""
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


def _nice_top(value: float) -> float:
    """A round axis maximum at or above `value` (percent scale)."""
    for step in (1, 2, 5, 10, 20, 25, 50, 100):
        if value <= step:
            return float(step)
    return float(math.ceil(value / 10) * 10)


def bar_chart(groups: Sequence[str], series: Sequence[str],
              values: Mapping[tuple[str, str], tuple[float, float, float]],
              title: str = "", axis: str = "pass@1 %") -> str:
    """Grouped bars with interval whiskers: values[(group, series)] = (mean, lo, hi) in percent."""
    colors = colors_for(series)
    bar_w, gap, left, top, height = 16, 18, 44, 28, 220
    group_w = bar_w * len(series) + gap
    legend_w = sum(24 + 7 * len(name) for name in series)
    width = max(left + group_w * len(groups) + 20, left + legend_w + 10)  # the legend must fit too
    legend_h = 22
    y_max = _nice_top(max([hi for _, _, hi in values.values()] + [1.0]) * 1.05)

    def y(v: float) -> float:
        return top + height * (1 - min(max(v, 0.0), y_max) / y_max)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
           f'height="{top + height + 60 + legend_h}" viewBox="0 0 {width} {top + height + 60 + legend_h}">',
           f"<title>{escape(title)}</title>"]
    for i in range(5):
        tick = y_max * i / 4
        out.append(f'<line x1="{left}" x2="{width - 10}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                   f'stroke="#e5e7eb"/><text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" '
                   f'class="tick">{tick:g}</text>')
    for gi, group in enumerate(groups):
        x0 = left + gap / 2 + gi * group_w
        for si, name in enumerate(series):
            if (group, name) not in values:
                continue
            mean, lo, hi = values[(group, name)]
            x = x0 + si * bar_w
            tip = f"{group} · {name}: {mean:.2f} [{lo:.2f}, {hi:.2f}]"
            out.append(f'<rect x="{x:.1f}" y="{y(mean):.1f}" width="{bar_w - 2}" '
                       f'height="{top + height - y(mean):.1f}" fill="{colors[name]}">'
                       f"<title>{escape(tip)}</title></rect>")
            cx = x + (bar_w - 2) / 2
            out.append(f'<path d="M{cx:.1f} {y(lo):.1f}V{y(hi):.1f}M{cx - 3:.1f} {y(lo):.1f}h6'
                       f'M{cx - 3:.1f} {y(hi):.1f}h6" stroke="#111827" stroke-width="1"/>')
        out.append(f'<text x="{x0 + bar_w * len(series) / 2:.1f}" y="{top + height + 16}" '
                   f'text-anchor="middle" class="label">{escape(group)}</text>')
    out.append(f'<text x="12" y="{top - 10}" class="tick">{escape(axis)}</text>')
    lx = left
    for name in series:
        out.append(f'<rect x="{lx}" y="{top + height + 36}" width="12" height="12" '
                   f'fill="{colors[name]}"/><text x="{lx + 16}" y="{top + height + 46}" '
                   f'class="label">{escape(name)}</text>')
        lx += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


def heat_color(rate: float) -> str:
    """White (0 %) to green (100 %) pass rate."""
    r, g, b = (int(255 + (t - 255) * rate) for t in (21, 128, 61))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(rows: Sequence[str], problems: Sequence[str],
            rates: Mapping[tuple[str, str], float], title: str = "") -> str:
    """Problem × adapter pass rates: one row per adapter, one column per problem; absent cells
    hatched grey. Hover a cell for the problem's name and rate."""
    cell_w = max(3.0, min(18.0, 900 / max(len(problems), 1)))
    cell_h, left, top = 16, 120, 6
    width = max(left + cell_w * len(problems) + 10, 480)
    height = top + cell_h * len(rows) + 22
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width:.0f}" height="{height}" '
           f'viewBox="0 0 {width:.0f} {height}" shape-rendering="crispEdges">',
           f"<title>{escape(title)}</title>"]
    for ri, row in enumerate(rows):
        yy = top + ri * cell_h
        out.append(f'<text x="{left - 6}" y="{yy + 12}" text-anchor="end" class="label">'
                   f"{escape(row)}</text>")
        for pi, problem in enumerate(problems):
            rate = rates.get((row, problem))
            fill = "#e5e7eb" if rate is None else heat_color(rate)
            tip = f"{problem} · {row}: " + ("not run" if rate is None else f"{rate * 100:.0f}%")
            out.append(f'<rect x="{left + pi * cell_w:.1f}" y="{yy}" width="{cell_w:.1f}" '
                       f'height="{cell_h - 1}" fill="{fill}"><title>{escape(tip)}</title></rect>')
    out.append(f'<text x="{left}" y="{height - 6}" class="tick">{len(problems)} problems '
               "(hover a cell) · white 0% → green 100%</text></svg>")
    return "".join(out)


def status_bar(shares: Mapping[str, float], width: int = 220) -> str:
    """One horizontal bar split by status share (percent)."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="14" role="img">']
    x = 0.0
    for status, share in shares.items():
        if not share:
            continue
        w = width * share / 100
        out.append(f'<rect x="{x:.1f}" y="1" width="{w:.1f}" height="12" '
                   f'fill="{STATUS_COLORS.get(status, OTHER_STATUS_COLOR)}">'
                   f"<title>{escape(status)}: {share:.1f}%</title></rect>")
        x += w
    out.append("</svg>")
    return "".join(out)
