"""Template filters and globals: safe markdown, dates, verdict and outcome chips."""

from __future__ import annotations

import functools
from datetime import datetime

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup, escape

# Raw HTML off: <script> and onerror= arrive as text. markdown-it also refuses
# javascript:, vbscript:, file: and data: link targets. Tables (GitHub style) render and bare
# URLs become links (linkify-it-py).
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": True, "typographer": False}
                       ).enable(["table", "strikethrough", "linkify"])
MAX_MARKDOWN_CHARS = 100_000
# markdown-it-py scans ahead from every "[", "(" of a link, URL or "<" it meets, so its cost
# grows with the text's length times the number of those; emphasis and table markers cost
# per pair. Past these budgets (0.2-0.5 s of rendering on a slow core) a text is shown as
# plain, escaped text instead: the words stay, the formatting goes.
MAX_RENDER_COST = 400_000
MAX_INLINE_MARKERS = 2_000
_LINK_MARKERS = ("[", "://", "www.", "@", "<")
_INLINE_MARKERS = ("*", "_", "~", "`", "|")


def _link_open(self, tokens, idx, options, env):
    tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
    return self.renderToken(tokens, idx, options, env)


_markdown.add_render_rule("link_open", _link_open)


def _image_as_link(self, tokens, idx, options, env):
    """An image in a note is a link to it: the pages' CSP loads no outside image (it showed
    broken), and neither does the PDF; fetching it would also tell its host who read the note."""
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = self.renderInlineAsText(token.children or [], options, env) or src
    return str(Markup('<a href="{}" rel="nofollow noopener noreferrer">{}</a>').format(src, f"[image: {alt}]"))


_markdown.add_render_rule("image", _image_as_link)

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


def render_plain(text: str | None) -> Markup:
    """Text shown as written: escaped, paragraphs and line breaks kept, nothing a link."""
    paragraphs = [p for p in (text or "").replace("\r\n", "\n").split("\n\n") if p.strip()]
    return Markup("").join(
        Markup('<p class="plain-text">{}</p>\n').format(Markup("<br>\n").join(
            escape(line) for line in paragraph.strip("\n").split("\n")))
        for paragraph in paragraphs)


def too_costly_to_render(text: str) -> bool:
    """Whether markdown would take too long on `text` (see MAX_RENDER_COST)."""
    links = sum(text.count(marker) for marker in _LINK_MARKERS)
    inline = sum(text.count(marker) for marker in _INLINE_MARKERS)
    return len(text) * (1 + links) > MAX_RENDER_COST or inline > MAX_INLINE_MARKERS


@functools.lru_cache(maxsize=512)  # guidance and descriptions repeat on every page view
def _render(text: str) -> str:
    if too_costly_to_render(text):
        return str(render_plain(text))
    return _markdown.render(text)


def render_markdown(text: str | None) -> Markup:
    """Markdown as sanitised HTML (raw HTML off, safe link targets), bounded in cost."""
    return Markup(_render((text or "")[:MAX_MARKDOWN_CHARS]))


_PRINT_BULLETS = ("•", "◦", "▪")  # disc, circle, square: the browser's markers by depth


@functools.lru_cache(maxsize=512)
def _render_print(text: str) -> str:
    if too_costly_to_render(text):
        return str(render_plain(text))
    tokens = _markdown.parse(text)
    depth = 0
    for index, token in enumerate(tokens):
        if token.type == "bullet_list_open":
            depth += 1
        elif token.type == "bullet_list_close":
            depth -= 1
        elif token.type == "list_item_open" and index + 2 < len(tokens) \
                and tokens[index + 1].type == "paragraph_open" and tokens[index + 2].type == "inline":
            ordered = token.info != ""
            marker = f"{token.info}{token.markup}" if ordered else _PRINT_BULLETS[min(depth, 3) - 1]
            mark = Token("text", "", 0, content=marker + "\u00a0")
            tokens[index + 2].children = [mark, *(tokens[index + 2].children or [])]
            token.attrSet("class", "marked")
    return _markdown.renderer.render(tokens, _markdown.options, {})


def render_print_markdown(text: str | None) -> Markup:
    """Markdown for the PDF report: as render_markdown, but each list item's marker is text
    at the start of its first paragraph (class "marked", for `list-style: none`). WeasyPrint
    lays a CSS list marker out as a box of its own, styled and line-broken separately: on a
    report whose notes hold lists that is a twentieth of its layout (docs/reports.md)."""
    return Markup(_render_print((text or "")[:MAX_MARKDOWN_CHARS]))


def render_note(note: str | None) -> str:
    """The HTML stored beside a note when it is written (Answer.note_html)."""
    return str(render_markdown(note))


def note_html(entry) -> Markup:
    """An answer's or a history entry's note. Text that came from a probe is shown as text,
    never as markdown: a probed service controls it. A person's note shows its stored HTML
    (rendered when saved), or is rendered now for rows older than that column."""
    if getattr(entry, "source", None) == "probe":
        return render_plain(entry.note)
    if entry.note_html is not None:
        return Markup(entry.note_html)
    return render_markdown(entry.note)


def format_datetime(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    return value.strftime(fmt) if value else "—"


# Cached: a few dozen distinct chips, drawn several times per row of every list (Markup's
# escaping formatter is slow), and each is the same string for the life of the process.
@functools.lru_cache(maxsize=256)
def _chip(table_name: str, key: str, extra: str = "") -> Markup:
    table = _CHIP_TABLES[table_name]
    label, css, icon = table.get(key, (key or "—", "chip-neutral", "•"))
    return Markup('<span class="chip {} {}"><span aria-hidden="true">{}</span> {}</span>').format(
        css, extra, icon, label)


def verdict_chip(verdict: str) -> Markup:
    """Colour and word and icon, so it reads for colour-blind people and on paper."""
    return _chip("verdicts", verdict)


def outcome_chip(outcome: str) -> Markup:
    return _chip("outcomes", outcome)


_CHIP_TABLES = {"verdicts": VERDICTS, "outcomes": OUTCOMES}


def probe_kind(kind: str) -> str:
    """A probe check's name as people write it: "HTTPS", "TLS expiry", "correlation ID"."""
    from webapp.probe_messages import KIND_LABELS

    return KIND_LABELS.get(kind, (kind or "").replace("_", " "))


def upper_first(text: str) -> str:
    """Capitalise the first letter only: Jinja's `capitalize` lowers the rest ("Https")."""
    return text[:1].upper() + text[1:] if text else text

FILTERS = {
    "markdown": render_markdown,
    "print_markdown": render_print_markdown,
    "plain_text": render_plain,
    "note_html": note_html,
    "dt": format_datetime,
    "verdict_chip": verdict_chip,
    "outcome_chip": outcome_chip,
    "status_label": lambda s: STATUS_LABELS.get(s, s),
    "probe_kind": probe_kind,
    "upper_first": upper_first,
}
