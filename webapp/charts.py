"""Small SVG charts for pages and PDFs: no JavaScript, no external assets."""

from __future__ import annotations

from markupsafe import Markup, escape


def line_chart(values: list[float | None], *, width: int = 600, height: int = 120,
               label: str = "", unit: str = "") -> Markup:
    """A polyline of values (None = gap), scaled to the largest value, with its range labelled."""
    points = [v for v in values if v is not None]
    if not points:
        return Markup('<p class="muted">No data yet.</p>')
    top = max(points) or 1.0
    step = width / max(1, len(values) - 1)
    segments, current = [], []
    for index, value in enumerate(values):
        if value is None:
            if current:
                segments.append(current)
            current = []
            continue
        current.append(f"{index * step:.1f},{height - 4 - (value / top) * (height - 8):.1f}")
    if current:
        segments.append(current)
    lines = "".join(
        f'<polyline fill="none" stroke="currentColor" stroke-width="2" points="{" ".join(seg)}"/>'
        if len(seg) > 1 else
        f'<circle cx="{seg[0].split(",")[0]}" cy="{seg[0].split(",")[1]}" r="3" fill="currentColor"/>'
        for seg in segments)
    title = escape(f"{label}: max {top:.0f}{unit}, last {points[-1]:.0f}{unit}")
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" height="{height}" '
        f'preserveAspectRatio="none" role="img" aria-label="{title}">'
        f"<title>{title}</title>{lines}</svg>"
    )


def bar_chart(bars: list[tuple[str, float | None]], *, width: int = 640, bar_height: int = 22,
              label_width: int = 210) -> Markup:
    """Horizontal bars of 0..100 scores, labelled, with the 70 and 85 thresholds marked.
    Self-contained SVG (no CSS needed), so it prints the same in pages and PDFs."""
    if not bars:
        return Markup('<p class="muted">No categories.</p>')
    gap, top = 8, 18
    plot = width - label_width - 48
    height = top + len(bars) * (bar_height + gap)
    parts = []
    for mark in (70, 85):
        x = label_width + plot * mark / 100
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height}" stroke="#9aa3ad" '
                     f'stroke-dasharray="3 3"/><text x="{x:.1f}" y="{top - 7}" font-size="10" '
                     f'text-anchor="middle" fill="#56606b">{mark}</text>')
    for index, (label, value) in enumerate(bars):
        y = top + index * (bar_height + gap)
        text_y = y + bar_height * 0.7
        parts.append(f'<text x="{label_width - 8}" y="{text_y:.1f}" font-size="12" text-anchor="end" '
                     f'fill="#1d2630">{escape(label[:34])}</text>')
        parts.append(f'<rect x="{label_width}" y="{y}" width="{plot}" height="{bar_height}" fill="#edf0f3"/>')
        if value is None:
            parts.append(f'<text x="{label_width + 6}" y="{text_y:.1f}" font-size="11" fill="#56606b">n/a</text>')
            continue
        colour = "#1f7a3d" if value >= 85 else "#a15c00" if value >= 70 else "#b3261e"
        parts.append(f'<rect x="{label_width}" y="{y}" width="{plot * value / 100:.1f}" '
                     f'height="{bar_height}" fill="{colour}"/>')
        parts.append(f'<text x="{label_width + plot + 6}" y="{text_y:.1f}" font-size="12" '
                     f'fill="#1d2630">{value:g}</text>')
    title = escape("Score by category: " + ", ".join(
        f"{label} {'n/a' if value is None else f'{value:g}'}" for label, value in bars))
    return Markup(f'<svg class="bar-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
                  f'width="{width}" height="{height}" role="img" aria-label="{title}">'
                  f'<title>{title}</title>{"".join(parts)}</svg>')
