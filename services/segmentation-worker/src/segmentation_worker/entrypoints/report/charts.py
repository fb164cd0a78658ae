"""Small inline SVG charts for the analysis report: no JavaScript, no CDN, readable offline.

Each function returns one `<svg>` element as a string; every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

WIDTH = 720
BAR_COLOUR = "#3b6ea5"
SECOND_COLOUR = "#e0913a"
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    if float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _svg(height: int, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'role="img" aria-label="{escape(title)}" {FONT}><title>{escape(title)}</title>'
        + "".join(body)
        + "</svg>"
    )


def horizontal_bars(labels: Sequence[str], values: Sequence[float], title: str) -> str:
    """One bar per label, the value written after it (e.g. customers per segment)."""
    row, left, right = 24, 190, 90
    height = row * len(labels) + 10
    top = max(values, default=0) or 1
    body = []
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 5 + index * row
        length = (WIDTH - left - right) * value / top
        body.append(
            f'<text x="{left - 8}" y="{y + 16}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{length:.1f}" height="{row - 6}" fill="{BAR_COLOUR}"/>'
            f'<text x="{left + length + 6:.1f}" y="{y + 16}">{escape(_number(value))}</text>'
        )
    return _svg(height, body, title)


def histogram(values: Sequence[float] | np.ndarray, title: str, x_label: str, bins: int = 30) -> str:
    """Counts of `values` in equal-width bins up to the 99th percentile (the long tail in the last bin)."""
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    height, left, bottom, top_margin = 260, 60, 40, 10
    plot_w, plot_h = WIDTH - left - 20, height - bottom - top_margin
    if data.size == 0:
        return _svg(60, ['<text x="10" y="30">no values</text>'], title)
    upper = float(np.quantile(data, 0.99)) if data.size > 1 else float(data.max())
    lower = float(min(data.min(), 0.0))
    if upper <= lower:
        upper = lower + 1.0
    counts, edges = np.histogram(np.clip(data, lower, upper), bins=bins, range=(lower, upper))
    most = int(counts.max()) or 1
    body = [
        f'<line x1="{left}" y1="{top_margin + plot_h}" x2="{left + plot_w}" y2="{top_margin + plot_h}" '
        'stroke="#555"/>'
    ]
    bar_w = plot_w / bins
    for index, count in enumerate(counts.tolist()):
        bar_h = plot_h * count / most
        body.append(
            f'<rect x="{left + index * bar_w + 1:.1f}" y="{top_margin + plot_h - bar_h:.1f}" '
            f'width="{max(bar_w - 2, 1):.1f}" height="{bar_h:.1f}" fill="{BAR_COLOUR}">'
            f"<title>{escape(_number(edges[index]))} – {escape(_number(edges[index + 1]))}: "
            f"{count}</title></rect>"
        )
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + plot_w * fraction
        body.append(
            f'<text x="{x:.1f}" y="{top_margin + plot_h + 16}" text-anchor="middle">'
            f"{escape(_number(lower + (upper - lower) * fraction))}</text>"
        )
    body.append(f'<text x="{left - 8}" y="{top_margin + 12}" text-anchor="end">{most}</text>')
    body.append(f'<text x="{left - 8}" y="{top_margin + plot_h}" text-anchor="end">0</text>')
    body.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">{escape(x_label)}</text>'
    )
    return _svg(height, body, title)


def heat_map(row_labels: Sequence[str], column_labels: Sequence[str], shares: np.ndarray, title: str) -> str:
    """A matrix of shares 0..1 as coloured cells with the percentage in each; NaN cells stay blank."""
    left, top = 90, 24
    columns = len(column_labels)
    cell_w = max(min((WIDTH - left - 10) / max(columns, 1), 48), 18)
    cell_h = 22
    width_needed = left + cell_w * columns + 10
    body = []
    for column, label in enumerate(column_labels):
        body.append(
            f'<text x="{left + column * cell_w + cell_w / 2:.1f}" y="{top - 8}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    for row, label in enumerate(row_labels):
        y = top + row * cell_h
        body.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
        for column in range(columns):
            share = float(shares[row, column])
            if not math.isfinite(share):
                continue
            # White (0%) to deep blue; cells are scaled against the best later month, so the
            # pattern after month 0 (always 100%) stays visible.
            intensity = min(share / _later_month_peak(shares), 1.0)
            colour = _blend(intensity)
            text_colour = "#fff" if intensity > 0.55 else "#111"
            x = left + column * cell_w
            body.append(
                f'<rect x="{x:.1f}" y="{y}" width="{cell_w - 1:.1f}" height="{cell_h - 1}" fill="{colour}"/>'
                f'<text x="{x + cell_w / 2:.1f}" y="{y + 15}" text-anchor="middle" font-size="10" '
                f'fill="{text_colour}">{share * 100:.0f}</text>'
            )
    height = top + cell_h * len(row_labels) + 6
    svg = _svg(height, body, title)
    if width_needed > WIDTH:  # many months: widen the drawing rather than squash the cells
        svg = svg.replace(f'viewBox="0 0 {WIDTH} ', f'viewBox="0 0 {width_needed:.0f} ', 1)
    return svg


def _later_month_peak(shares: np.ndarray) -> float:
    later = shares[:, 1:] if shares.shape[1] > 1 else shares
    finite = later[np.isfinite(later)]
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def _blend(intensity: float) -> str:
    low, high = (255, 255, 255), (31, 78, 140)
    channels = (round(a + (b - a) * intensity) for a, b in zip(low, high, strict=True))
    return "#" + "".join(f"{channel:02x}" for channel in channels)


def paired_bars(
    labels: Sequence[str],
    first: Sequence[float],
    second: Sequence[float],
    names: tuple[str, str],
    title: str,
    x_label: str,
) -> str:
    """Two bars per label (e.g. actual and predicted mean purchases per calibration frequency)."""
    height, left, bottom, top_margin = 280, 50, 48, 28
    plot_w, plot_h = WIDTH - left - 20, height - bottom - top_margin
    finite = [value for value in (*first, *second) if math.isfinite(value)]
    top = max(finite, default=0) or 1
    group_w = plot_w / max(len(labels), 1)
    bar_w = group_w * 0.38
    body = [
        f'<line x1="{left}" y1="{top_margin + plot_h}" x2="{left + plot_w}" y2="{top_margin + plot_h}" '
        'stroke="#555"/>',
        f'<rect x="{left}" y="4" width="12" height="12" fill="{BAR_COLOUR}"/>'
        f'<text x="{left + 18}" y="14">{escape(names[0])}</text>'
        f'<rect x="{left + 140}" y="4" width="12" height="12" fill="{SECOND_COLOUR}"/>'
        f'<text x="{left + 158}" y="14">{escape(names[1])}</text>',
    ]
    for index, label in enumerate(labels):
        x = left + index * group_w + group_w * 0.1
        for offset, value, colour in ((0.0, first[index], BAR_COLOUR), (bar_w, second[index], SECOND_COLOUR)):
            if not math.isfinite(value):
                continue
            bar_h = plot_h * value / top
            body.append(
                f'<rect x="{x + offset:.1f}" y="{top_margin + plot_h - bar_h:.1f}" width="{bar_w:.1f}" '
                f'height="{bar_h:.1f}" fill="{colour}"><title>{escape(_number(value))}</title></rect>'
            )
        body.append(
            f'<text x="{x + bar_w:.1f}" y="{top_margin + plot_h + 16}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    body.append(f'<text x="{left - 6}" y="{top_margin + 10}" text-anchor="end">{escape(_number(top))}</text>')
    body.append(f'<text x="{left - 6}" y="{top_margin + plot_h}" text-anchor="end">0</text>')
    body.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">{escape(x_label)}</text>'
    )
    return _svg(height, body, title)
