"""Template filters and globals: safe markdown, dates, verdict and outcome chips."""

from __future__ import annotations

from datetime import datetime

from markdown_it import MarkdownIt
from markupsafe import Markup

# Raw HTML off: <script> and onerror= arrive as text. markdown-it also refuses
# javascript:, vbscript:, file: and data: link targets.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
MAX_MARKDOWN_CHARS = 100_000

VERDICTS = {
    "ready": ("Ready", "verdict-ready", "✔"),
    "ready_with_conditions": ("Ready with conditions", "verdict-conditions", "◐"),
    "not_ready": ("Not ready", "verdict-not-ready", "✖"),
}
OUTCOMES = {
    "pass": ("Pass", "outcome-pass", "✔"),
    "warn": ("Warn", "outcome-warn", "▲"),
    "fail": ("Fail", "outcome-fail", "✖"),
    "error": ("Error", "outcome-error", "⚠"),
}
STATUS_LABELS = {"met": "Met", "partial": "Partial", "not_met": "Not met", "n_a": "N/A", None: "Unanswered"}


def render_markdown(text: str | None) -> Markup:
    return Markup(_markdown.render((text or "")[:MAX_MARKDOWN_CHARS]))


def format_datetime(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    return value.strftime(fmt) if value else "—"


def _chip(table: dict, key: str, extra: str = "") -> Markup:
    label, css, icon = table.get(key, (key or "—", "chip-neutral", "•"))
    return Markup('<span class="chip {} {}"><span aria-hidden="true">{}</span> {}</span>').format(
        css, extra, icon, label)


def verdict_chip(verdict: str) -> Markup:
    """Colour and word and icon, so it reads for colour-blind people and on paper."""
    return _chip(VERDICTS, verdict)


def outcome_chip(outcome: str) -> Markup:
    return _chip(OUTCOMES, outcome)


FILTERS = {
    "markdown": render_markdown,
    "dt": format_datetime,
    "verdict_chip": verdict_chip,
    "outcome_chip": outcome_chip,
    "status_label": lambda s: STATUS_LABELS.get(s, s),
}
