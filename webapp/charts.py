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
