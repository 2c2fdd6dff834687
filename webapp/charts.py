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
    lines = "".join(f'<polyline class="chart-line" fill="none" stroke="currentColor" stroke-width="2" points="{" ".join(seg)}"/>' for seg in segments)
    title = escape(f"{label}: max {top:.0f}{unit}, last {points[-1]:.0f}{unit}")
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{title}">'
        f"<title>{title}</title>{lines}</svg>"
    )
