"""SVG charts for pages and PDFs, drawn on the server: axes with dates and values, units,
verdict thresholds as labelled lines, a legend when there is more than one series, and
colour-blind-safe colours (Okabe–Ito) always paired with text. No JavaScript and no style
attributes (the CSP refuses them): only SVG presentation attributes, which WeasyPrint reads too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from markupsafe import Markup, escape

# Okabe–Ito: distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9")
INK, GRID, MUTED = "#1b1f24", "#d9dde3", "#5b6470"
OUTCOME_COLOURS = {"pass": "#009E73", "warn": "#E69F00", "fail": "#D55E00", "error": "#CC79A7", None: "#d9dde3"}
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif"'


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[datetime | date, float | None]]  # (when, value); None breaks the line


@dataclass(frozen=True)
class Threshold:
    value: float
    label: str


VERDICT_THRESHOLDS = (Threshold(85, "Ready ≥ 85"), Threshold(70, "Conditions ≥ 70"))


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _uptime(value: float) -> str:
    """An uptime percentage to two decimals, cut rather than rounded, so it never claims more
    than happened: 2,699 of 2,700 is "99.96", not "100"; 95 of 96 is "98.95", not "99"."""
    return f"{math.floor(value * 100) / 100:.2f}".rstrip("0").rstrip(".")


def _when(value: datetime | date) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()


def _date_label(seconds: float, span: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    if span <= 600:  # minutes apart: minute labels would repeat
        return moment.strftime("%d %b %H:%M:%S")
    if span <= 2 * 86400:
        return moment.strftime("%d %b %H:%M")
    return moment.strftime("%d %b %Y") if span > 300 * 86400 else moment.strftime("%d %b")


def _nice_max(top: float) -> float:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if top <= step * 4:
            return step * 4
    return top


# Charts scale to their card: drawn 720 wide (a half-page card), a chart in a full-width
# card is blown up by half again, labels included. Full-width cards draw them this wide.
FULL_CARD_CHART_WIDTH = 1120


def time_chart(series: Sequence[Series], *, title: str, unit: str = "", y_max: float | None = None,
               thresholds: Sequence[Threshold] = (), width: int = 720, height: int = 240) -> Markup:
    """A time-series line chart: dated x axis, labelled y axis with unit, threshold lines."""
    values = [v for s in series for _, v in s.points if v is not None]
    times = [_when(t) for s in series for t, v in s.points if v is not None]
    if not values:
        return Markup(f'<p class="muted chart-empty">{escape(title)}: no data yet.</p>')
    top = y_max if y_max is not None else _nice_max(max(max(values), *(t.value for t in thresholds), 1))
    left, right, upper, bottom = 48, 16, 14, 34 + (20 if len(series) > 1 else 0)
    plot_w, plot_h = width - left - right, height - upper - bottom
    start, end = min(times), max(times)
    span = end - start

    def x(seconds: float) -> float:
        return left + (plot_w / 2 if span == 0 else (seconds - start) / span * plot_w)

    def y(value: float) -> float:
        return upper + plot_h - max(0.0, min(value, top)) / top * plot_h

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" {FONT} font-size="11">',
             f"<title>{escape(title)}</title>"]
    for tick in range(5):  # y grid and labels
        value = top * tick / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                     f'stroke="{GRID}" stroke-width="1"/>')
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" fill="{MUTED}">'
                     f"{_num(value)}{escape(unit)}</text>")
    ticks = 1 if span == 0 else 5
    shown = set()
    for n in range(ticks):  # x labels: evenly spaced dates, none twice
        seconds = start + (span * n / (ticks - 1) if ticks > 1 else 0)
        if (label := _date_label(seconds, span)) in shown:
            continue
        shown.add(label)
        anchor = "start" if n == 0 and ticks > 1 else "end" if n == ticks - 1 and ticks > 1 else "middle"
        parts.append(f'<text x="{x(seconds):.1f}" y="{upper + plot_h + 16}" text-anchor="{anchor}" '
                     f'fill="{MUTED}">{escape(label)}</text>')
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{upper + plot_h}" y2="{upper + plot_h}" '
                 f'stroke="{MUTED}" stroke-width="1"/>')
    for threshold in thresholds:
        ty = y(threshold.value)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="{INK}" '
                     f'stroke-width="1" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{left + plot_w - 4}" y="{ty - 4:.1f}" text-anchor="end" fill="{INK}">'
                     f"{escape(threshold.label)}</text>")
    for index, one in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        segment: list[str] = []
        segments = []
        for when, value in one.points:
            if value is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{x(_when(when)):.1f},{y(value):.1f}")
        if segment:
            segments.append(segment)
        for seg in segments:
            if len(seg) > 1:
                parts.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{colour}" '
                             f'stroke-width="2" stroke-linejoin="round"/>')
            for point in seg if len(seg) <= 40 else seg[-1:]:
                cx, cy = point.split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
        last = next((v for _, v in reversed(one.points) if v is not None), None)
        if len(series) > 1:  # legend: a swatch and the label with the latest value
            lx = left + index * (plot_w / len(series))
            parts.append(f'<rect x="{lx:.1f}" y="{height - 14}" width="12" height="4" fill="{colour}"/>')
            parts.append(f'<text x="{lx + 16:.1f}" y="{height - 9}" fill="{INK}">{escape(one.label)}'
                         f"{f' ({_num(last)}{escape(unit)})' if last is not None else ''}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class Day:
    day: date
    runs: int
    passes: int
    worst: str | None  # pass | warn | fail | error, None when nothing ran

    @property
    def uptime(self) -> float | None:
        return None if self.runs == 0 else 100 * self.passes / self.runs


def uptime_bar(days: Sequence[Day], *, title: str, width: int = 720, height: int = 56) -> Markup:
    """A day-by-day heartbeat bar: one block per day coloured by its worst outcome, with the
    day's uptime in its tooltip and first/last dates and the overall uptime written out."""
    if not days:
        return Markup(f'<p class="muted chart-empty">{escape(title)}: no probe results yet.</p>')
    gap, label_h = 2, 16
    block = (width - gap * (len(days) - 1)) / len(days)
    runs = sum(d.runs for d in days)
    overall = 100 * sum(d.passes for d in days) / runs if runs else None
    checks = "check" if runs == 1 else "checks"
    summary = (f"{title}: {_uptime(overall)}% of {runs:,} {checks} passed" if overall is not None
               else f"{title}: no checks ran")
    parts = [f'<svg class="chart uptime-bar" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="{escape(summary)}" xmlns="http://www.w3.org/2000/svg" {FONT} font-size="11">',
             f"<title>{escape(summary)}</title>"]
    bar_h = height - label_h - 4
    for index, day in enumerate(days):
        tip = (f"{day.day:%d %b %Y}: no checks" if day.uptime is None else
               f"{day.day:%d %b %Y}: {_uptime(day.uptime)}% of {day.runs:,} passed, worst {day.worst}")
        parts.append(f'<rect x="{index * (block + gap):.1f}" y="0" width="{block:.1f}" height="{bar_h}" rx="2" '
                     f'fill="{OUTCOME_COLOURS.get(day.worst, GRID)}"><title>{escape(tip)}</title></rect>')
    parts.append(f'<text x="0" y="{height - 2}" fill="{MUTED}">{days[0].day:%d %b}</text>')
    parts.append(f'<text x="{width / 2:.0f}" y="{height - 2}" text-anchor="middle" fill="{INK}">'
                 f"{escape(summary.split(': ', 1)[1])}</text>")
    parts.append(f'<text x="{width}" y="{height - 2}" text-anchor="end" fill="{MUTED}">{days[-1].day:%d %b}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def category_bars(categories: Sequence[tuple[str, float | None]], *, title: str,
                  thresholds: Sequence[Threshold] = VERDICT_THRESHOLDS, width: int = 720) -> Markup:
    """Horizontal bars, one per category, with its score written at the bar's end and the
    verdict thresholds as labelled lines; a category with nothing to score says "n/a"."""
    if not categories:
        return Markup(f'<p class="muted chart-empty">{escape(title)}: nothing to show.</p>')
    label_w, row_h, upper = 190, 22, 18
    plot_w = width - label_w - 48
    height = upper + row_h * len(categories) + 6
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" {FONT} font-size="12">',
             f"<title>{escape(title)}</title>"]
    for index, (label, score) in enumerate(categories):
        top = upper + index * row_h
        short = label if len(label) <= 28 else label[:27] + "…"
        parts.append(f'<text x="{label_w - 8}" y="{top + 15}" text-anchor="end" fill="{INK}">{escape(short)}</text>')
        parts.append(f'<rect x="{label_w}" y="{top + 4}" width="{plot_w}" height="14" fill="#f0f2f5"/>')
        if score is None:
            parts.append(f'<text x="{label_w + 6}" y="{top + 15}" fill="{MUTED}">n/a</text>')
            continue
        colour = PALETTE[0] if score >= thresholds[0].value else PALETTE[1] if score >= thresholds[-1].value else PALETTE[3]
        parts.append(f'<rect x="{label_w}" y="{top + 4}" width="{plot_w * score / 100:.1f}" height="14" fill="{colour}"/>')
        parts.append(f'<text x="{label_w + plot_w + 6}" y="{top + 15}" fill="{INK}">{_num(score)}</text>')
    ordered = sorted(thresholds, key=lambda t: t.value)
    for index, threshold in enumerate(ordered):
        tx = label_w + plot_w * threshold.value / 100
        parts.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{upper - 4}" y2="{height - 2}" stroke="{INK}" '
                     f'stroke-width="1" stroke-dasharray="3 3"/>')
        # Two close lines (70 and 85 are 72 px apart) would run their centred labels into
        # each other: hang the lower one's label left of its line, the upper one's right.
        close = [abs(other.value - threshold.value) * plot_w / 100 < 120 for other in ordered]
        anchor, dx = "middle", 0
        if index + 1 < len(ordered) and close[index + 1]:
            anchor, dx = "end", -3
        elif index > 0 and close[index - 1]:
            anchor, dx = "start", 3
        parts.append(f'<text x="{tx + dx:.1f}" y="{upper - 7}" text-anchor="{anchor}" fill="{INK}" font-size="10">'
                     f"{escape(threshold.label)}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))



# Sparklines ----------------------------------------------------------------------------

def sparkline(values: Sequence[float | None], width: int = 96, height: int = 24) -> Markup:
    """A tiny score trend (0..100) for table rows: the line and its last point, labelled for
    screen readers. Plain Python: a dashboard draws fifty of these per page."""
    return _sparkline(tuple(values), width, height)


# Cached by the values themselves: trends change rarely, and formatting a thousand points
# per page was a third of the table's time.
@functools.lru_cache(maxsize=4096)
def _sparkline(values: tuple[float | None, ...], width: int, height: int) -> Markup:
    points = [v or 0.0 for v in values]
    if len(points) < 2:
        return Markup('<span class="muted small">one point</span>' if points else '<span class="muted">—</span>')
    step = (width - 4) / (len(points) - 1)
    span = height - 4
    coords = " ".join(f"{2 + i * step:.1f},{2 + span * (1 - v / 100):.1f}" for i, v in enumerate(points))
    label = escape("Score trend: " + ", ".join(str(round(v)) for v in points))
    return Markup(
        f'<svg class="sparkline" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{label}"><polyline points="{coords}" fill="none" stroke="currentColor" '
        f'stroke-width="1.5" stroke-linejoin="round" stroke-linecap="round"/>'
        f'<circle cx="{width - 2:.1f}" cy="{2 + span * (1 - points[-1] / 100):.1f}" r="2" fill="currentColor"/></svg>')
