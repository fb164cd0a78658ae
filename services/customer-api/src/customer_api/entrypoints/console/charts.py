"""Charts drawn on the server as inline SVG: no chart library, no CDN, and nothing to run in the browser.

Every label goes through `escape`, and colours are presentation attributes (not `style`), so the
console's Content-Security-Policy can forbid inline styles and scripts.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

INK = "#1f2933"
MUTED = "#52606d"
GRID = "#cbd2d9"
SERIES = ("#0b5cad", "#b44d12", "#2f7d32", "#7b3fa0", "#9c2f3f", "#00707a")
TARGET = "#9c2f3f"
PALE = (240, 244, 248)
DEEP = (11, 92, 173)


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if value == int(value):
        return f"{int(value)}"
    return f"{value:.2f}"


def _frame(width: int, height: int, title: str, body: str) -> Markup:
    label = escape(title)
    return Markup(
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{label}" '
        f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{label}</title>{body}</svg>"
    )


def line_chart(
    series: Sequence[tuple[str, Sequence[tuple[str, float]]]],
    *,
    title: str,
    target: float | None = None,
    width: int = 640,
    height: int = 220,
) -> Markup:
    """One or more lines over the same x labels, with an optional dashed target line."""
    left, right, top, bottom = 56, 16, 16, 40
    labels = [label for label, _ in series[0][1]] if series and series[0][1] else []
    values = [value for _, points in series for _, value in points]
    if target is not None:
        values.append(target)
    if not labels or not values:
        return _frame(width, height, title, f'<text x="16" y="32" fill="{MUTED}">—</text>')
    low, high = min(0.0, min(values)), max(values)
    if high == low:
        high = low + 1
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(1, len(labels) - 1)

    def y(value: float) -> float:
        return top + plot_h - (value - low) / (high - low) * plot_h

    parts = []
    for tick in range(5):
        value = low + (high - low) * tick / 4
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="{MUTED}">{_fmt(value)}</text>'
        )
    every = max(1, len(labels) // 8)
    for index, label in enumerate(labels):
        if index % every == 0 or index == len(labels) - 1:
            parts.append(
                f'<text x="{left + index * step:.1f}" y="{height - bottom + 16}" text-anchor="middle" '
                f'font-size="11" fill="{MUTED}">{escape(label)}</text>'
            )
    if target is not None:
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(target):.1f}" y2="{y(target):.1f}" '
            f'stroke="{TARGET}" stroke-width="1.5" stroke-dasharray="6 4"/>'
        )
    for number, (name, points) in enumerate(series):
        colour = SERIES[number % len(SERIES)]
        coordinates = " ".join(
            f"{left + index * step:.1f},{y(value):.1f}" for index, (_, value) in enumerate(points)
        )
        parts.append(
            f'<polyline points="{coordinates}" fill="none" stroke="{colour}" stroke-width="2.5">'
            f"<title>{escape(name)}</title></polyline>"
        )
        for index, (label, value) in enumerate(points):
            parts.append(
                f'<circle cx="{left + index * step:.1f}" cy="{y(value):.1f}" r="3" fill="{colour}">'
                f"<title>{escape(name)} {escape(label)}: {_fmt(value)}</title></circle>"
            )
    if len(series) > 1:
        for number, (name, _) in enumerate(series):
            colour = SERIES[number % len(SERIES)]
            x = left + number * 150
            parts.append(
                f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{colour}"/>'
                f'<text x="{x + 14}" y="{height - 5}" font-size="11" fill="{INK}">{escape(name)}</text>'
            )
    return _frame(width, height, title, "".join(parts))


def bar_chart(
    bars: Sequence[tuple[str, float]],
    *,
    title: str,
    highlight: set[str] | None = None,
    width: int = 640,
    bar_height: int = 22,
    unit: str = "",
) -> Markup:
    """Horizontal bars with their values; `highlight` names bars to draw in the warning colour."""
    left, right, gap = 150, 70, 8
    height = max(bar_height + 2 * gap, len(bars) * (bar_height + gap) + gap)
    if not bars:
        return _frame(width, bar_height * 2, title, f'<text x="16" y="24" fill="{MUTED}">—</text>')
    high = max(max(value for _, value in bars), 0.0) or 1.0
    plot_w = width - left - right
    parts = []
    for index, (label, value) in enumerate(bars):
        top = gap + index * (bar_height + gap)
        length = max(0.0, value) / high * plot_w
        colour = TARGET if highlight and label in highlight else SERIES[0]
        parts.append(
            f'<text x="{left - 8}" y="{top + bar_height * 0.7:.1f}" text-anchor="end" font-size="12" '
            f'fill="{INK}">{escape(label)}</text>'
            f'<rect x="{left}" y="{top}" width="{length:.1f}" height="{bar_height}" fill="{colour}">'
            f"<title>{escape(label)}: {_fmt(value)}{escape(unit)}</title></rect>"
            f'<text x="{left + length + 6:.1f}" y="{top + bar_height * 0.7:.1f}" font-size="12" '
            f'fill="{INK}">{_fmt(value)}{escape(unit)}</text>'
        )
    return _frame(width, height, title, "".join(parts))


def heat_map(
    rows: Sequence[tuple[str, Sequence[float | None]]],
    columns: Sequence[str],
    *,
    title: str,
    cell: int = 34,
    percent: bool = True,
) -> Markup:
    """A grid of cells shaded by value (0..1 when `percent`), e.g. cohort retention or segment moves."""
    # Long column names (segments) are written slanted, with room above the grid for them.
    slanted = any(len(column) > 6 for column in columns)
    left, top = 130 if slanted else 110, 28 + (6 * max(len(c) for c in columns) if slanted and columns else 0)
    width = left + max(1, len(columns)) * cell + 8
    height = top + max(1, len(rows)) * cell + 8
    values = [value for _, row in rows for value in row if value is not None]
    if not rows or not values:
        return _frame(width, 60, title, f'<text x="16" y="32" fill="{MUTED}">—</text>')
    high = 1.0 if percent else (max(values) or 1.0)
    parts = []
    for index, column in enumerate(columns):
        x = left + index * cell + cell / 2
        placement = (
            f'x="{x:.1f}" y="{top - 6}" text-anchor="start" transform="rotate(-50 {x:.1f} {top - 6})"'
            if slanted
            else f'x="{x:.1f}" y="{top - 8}" text-anchor="middle"'
        )
        parts.append(f'<text {placement} font-size="11" fill="{MUTED}">{escape(column)}</text>')
    for row_index, (label, row) in enumerate(rows):
        y = top + row_index * cell
        parts.append(
            f'<text x="{left - 8}" y="{y + cell * 0.62:.1f}" text-anchor="end" font-size="11" '
            f'fill="{INK}">{escape(label)}</text>'
        )
        for column_index, value in enumerate(row):
            x = left + column_index * cell
            if value is None:
                continue
            share = max(0.0, min(1.0, value / high))
            # From near-white to the series blue; text flips to white on dark cells for contrast.
            red, green, blue = (round(a + (b - a) * share) for a, b in zip(PALE, DEEP, strict=True))
            fill = f"rgb({red},{green},{blue})"
            text_colour = "#ffffff" if share > 0.55 else INK
            shown = f"{value * 100:.0f}" if percent else _fmt(value)
            column_name = columns[column_index] if column_index < len(columns) else ""
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{fill}">'
                f"<title>{escape(label)} / {escape(column_name)}"
                f": {shown}{'%' if percent else ''}</title></rect>"
                f'<text x="{x + cell / 2 - 1:.1f}" y="{y + cell * 0.6:.1f}" text-anchor="middle" '
                f'font-size="10" fill="{text_colour}">{shown}</text>'
            )
    return _frame(width, height, title, "".join(parts))


def grouped_bar_chart(
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    unit: str = "",
    width: int = 640,
) -> Markup:
    """Vertical bars per group, one bar per series (e.g. this period against the previous one)."""
    left, right, top, bottom = 40, 16, 16, 64
    height = 240
    values = [value for _, row in series for value in row]
    if not groups or not values:
        return _frame(width, 60, title, f'<text x="16" y="32" fill="{MUTED}">—</text>')
    high = max(max(values), 0.0) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom
    group_w = plot_w / len(groups)
    bar_w = group_w * 0.8 / len(series)
    parts = [
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{GRID}"/>'
    ]
    for index, group in enumerate(groups):
        x0 = left + index * group_w + group_w * 0.1
        for number, (name, row) in enumerate(series):
            value = row[index]
            bar_h = max(0.0, value) / high * plot_h
            x = x0 + number * bar_w
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{bar_h:.1f}" '
                f'fill="{SERIES[number % len(SERIES)]}"><title>{escape(group)} · {escape(name)}: '
                f"{_fmt(value)}{escape(unit)}</title></rect>"
                f'<text x="{x + bar_w / 2 - 1:.1f}" y="{top + plot_h - bar_h - 4:.1f}" text-anchor="middle" '
                f'font-size="10" fill="{INK}">{_fmt(value)}</text>'
            )
        parts.append(
            f'<text x="{left + index * group_w + group_w / 2:.1f}" y="{top + plot_h + 16}" '
            'text-anchor="middle" '
            f'font-size="11" fill="{INK}">{escape(group)}</text>'
        )
    for number, (name, _) in enumerate(series):
        x = left + number * 160
        parts.append(
            f'<rect x="{x}" y="{height - 16}" width="10" height="10" fill="{SERIES[number % len(SERIES)]}"/>'
            f'<text x="{x + 14}" y="{height - 7}" font-size="11" fill="{INK}">{escape(name)}</text>'
        )
    return _frame(width, height, title, "".join(parts))
