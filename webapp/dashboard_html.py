"""The dashboard's repeated parts as HTML, in Python: its table rows, column headings,
team bars and filter menus. As Jinja macros and loops with a `url_for` each they were most
of the page's time. Everything from the database goes through `escape`; the output is
what the templates used to give, byte for byte."""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import g, request, url_for
from markupsafe import Markup, escape

from webapp import charts
from webapp.dashboard import DashboardRow, Query, Summary
from webapp.presentation import format_datetime, outcome_chip

_MARK = 918273645  # an id no URL holds otherwise, replaced by each row's


def url_patterns() -> dict:
    """This request's URL patterns for `row_url`: looked up once for a whole table."""
    return g.setdefault("_row_url_patterns", {})


def row_url(endpoint: str, name: str, value: int, patterns: dict | None = None) -> str:
    """`url_for(endpoint, name=value)` for an int argument: one real url_for per request
    and endpoint, then string formatting (url_for costs ~30 µs, fifty rows need ~250)."""
    if patterns is None:
        patterns = url_patterns()
    key = (endpoint, name)
    if key not in patterns:
        patterns[key] = url_for(endpoint, **{name: _MARK}).replace(str(_MARK), "\0")
    return patterns[key].replace("\0", str(value))


_SLOT = "\0"  # url_for writes it as %00, which no other value can give: the app refuses NUL


def url_with_slot(endpoint: str, slot: str, values: dict) -> Callable[[object], str]:
    """`url_for(endpoint, **values)` for each value of `values[slot]`, which holds `_SLOT`:
    one real url_for, then string formatting (plain url_for if %00 is not there once)."""
    head, found, tail = url_for(endpoint, **values).partition("%00")
    if not found or "%00" in tail:
        return lambda value: url_for(endpoint, **{**values, slot: value})
    return lambda value: f"{head}{value}{tail}"


def score(value: float | None) -> Markup:
    return Markup('<span class="muted">—</span>') if value is None else Markup(f"{value:g}")


SHORT_VERDICTS = {
    "ready": ("Ready", "verdict-ready", "✔", "Ready"),
    "ready_with_conditions": ("Conditions", "verdict-conditions", "◐", "Ready with conditions"),
    "not_ready": ("Not ready", "verdict-not-ready", "✖", "Not ready"),
}


@functools.lru_cache(maxsize=64)  # the same few strings on every row of every list
def short_verdict_chip(verdict: str) -> Markup:
    """A verdict chip short enough for a dense table: still colour, word and icon."""
    label, css, icon, title = SHORT_VERDICTS.get(verdict, (verdict, "chip-neutral", "•", verdict))
    return Markup('<span class="chip {}" title="{}"><span aria-hidden="true">{}</span> {}</span>').format(
        css, title, icon, label)


def _verdict_link(assessment_id: int, verdict: str, patterns: dict | None) -> str:
    return (f'<a href="{row_url("assessments.show", "assessment_id", assessment_id, patterns)}" class="chip-link">'
            f'{short_verdict_chip(verdict)}</a>')


def _verdict_with_note(assessment_id: int, verdict: str, note: str, patterns: dict | None) -> str:
    return f'{_verdict_link(assessment_id, verdict, patterns)}\n      <span class="state-note">{note}</span>'


def _verdict_td(css: str, inner: str) -> Markup:
    """A verdict-and-note cell; the whitespace matches what the Jinja macro made."""
    return Markup(f'<td class="{css}">\n    \n      {inner}\n    \n  </td>')


def working_cell(row: DashboardRow, patterns: dict | None = None) -> Markup:
    """The verdict the service stands at: the open assessment's, else the last signed-off one."""
    if row.working:
        state = "in review" if row.working.state == "in_review" else "draft"
        inner = _verdict_with_note(row.working.id, row.working.verdict, state, patterns)
    elif row.signed_off:
        inner = _verdict_with_note(row.signed_off.id, row.signed_off.verdict, "signed off", patterns)
    else:
        inner = '<span class="chip chip-neutral"><span aria-hidden="true">○</span> Not assessed</span>'
    return _verdict_td("verdict-cell", inner)


def signed_cell(row: DashboardRow, patterns: dict | None = None) -> Markup:
    if row.signed_off:
        inner = _verdict_with_note(row.signed_off.id, row.signed_off.verdict,
                                   format_datetime(row.signed_off.decided_at, "%Y-%m-%d"), patterns)
    else:
        inner = '<span class="muted">never</span>'
    return _verdict_td("signed-cell", inner)


def probe_cell(row: DashboardRow, patterns: dict | None = None) -> Markup:
    if not row.probe_outcome:
        return Markup('<td><span class="muted">not probed</span></td>')
    checked = f", checked {format_datetime(row.probe_checked_at)}" if row.probe_checked_at else ""
    return Markup(f'<td><a href="{row_url("probes.show", "service_id", row.service_id, patterns)}" class="chip-link" '
                  f'title="Worst latest check{checked}">{outcome_chip(row.probe_outcome)}</a></td>')


def attention_cell(row: DashboardRow, patterns: dict | None = None) -> Markup:
    """How many needs-attention items the service has, linking to them; nothing if not counted."""
    n = row.attention_items
    if n:
        return Markup(
            f'<td class="num todo-cell"><a href="{row_url("attention.index", "service", row.service_id, patterns)}" '
            f'class="todo-count" title="{n} thing{"" if n == 1 else "s"} to do: open the list">'
            f'<span aria-hidden="true">⚑</span> {n}</a></td>')
    if n == 0:
        return Markup('<td class="num todo-cell"><span class="muted" title="Nothing needs attention">—</span></td>')
    return Markup('<td class="num todo-cell"></td>')


def lifecycle_badge(row: DashboardRow) -> Markup:
    if row.lifecycle == "live":
        return Markup("")
    lifecycle = escape(row.lifecycle)
    return Markup(f'<span class="badge lifecycle-{lifecycle}">{lifecycle}</span>')


def owner_cell(row: DashboardRow) -> Markup:
    if not row.owner_name:
        return Markup('<td class="owner-cell"><span class="muted">no owner</span></td>')
    return Markup(f'<td class="owner-cell"><span title="{escape(row.owner_email or "")}">'
                  f'{escape(row.owner_name)}</span></td>')


def dashboard_rows(rows: list[DashboardRow], with_attention: bool = False) -> Markup:
    """Every <tr> of the dashboard table, spaced as the template's loop spaced them."""
    patterns = url_patterns()
    return Markup("".join([f"\n        {dashboard_row(row, with_attention, patterns)}\n      " for row in rows]))


def _answered(row: DashboardRow) -> str:
    """The share answered of the assessment the verdict is from (the signed-off one, titled so,
    when nothing is open)."""
    if row.answered_pct is None:
        return '<span class="muted">—</span>'
    if row.working is None:
        return f'<span title="Of the signed-off assessment">{row.answered_pct:g}%</span>'
    return f"{row.answered_pct:g}%"


def dashboard_row(row: DashboardRow, with_attention: bool = False, patterns: dict | None = None) -> Markup:
    """One <tr> of the dashboard table."""
    if patterns is None:
        patterns = url_patterns()
    answered = _answered(row)
    if row.blocker_count:
        n = row.blocker_count
        answered += (f'<span class="blockers" title="Critical items not met or unanswered">{n} '
                     f'blocker{"" if n == 1 else "s"}</span>')
    assessed = (format_datetime(row.last_assessed, "%Y-%m-%d") if row.last_assessed
                else '<span class="muted">never</span>')
    mine = ' class="mine"' if row.mine else ""
    return Markup(
        f'<tr{mine}>\n'
        f'          <td class="service-cell"><a href="{row_url("services.show", "service_id", row.service_id, patterns)}">'
        f'{escape(row.name)}</a>\n            {lifecycle_badge(row)}</td>\n'
        f'          <td class="team-cell"><a href="{row_url("teams.show", "team_id", row.team_id, patterns)}">'
        f'{escape(row.team_name)}</a></td>\n'
        f'          <td class="num">{row.tier}</td>\n'
        f'          {working_cell(row, patterns)}\n'
        f'          <td class="num score-cell">{score(row.score)}</td>\n'
        f'          <td>{charts.sparkline(row.trend, 80, 22)}</td>\n'
        f'          <td class="num">{answered}</td>\n'
        f'          {signed_cell(row, patterns)}\n'
        f'          {probe_cell(row, patterns)}\n'
        f'          {attention_cell(row, patterns) if with_attention else ""}\n'
        f'          {owner_cell(row)}\n'
        f'          <td class="nowrap">{assessed}</td>\n'
        f'        </tr>')


def team_rows(rows: list[DashboardRow]) -> Markup:
    """Every <tr> of a team page's table of services, spaced as the template's loop spaced them."""
    patterns = url_patterns()
    return Markup("".join([team_row(row, patterns) for row in rows]))


def team_row(row: DashboardRow, patterns: dict | None = None) -> str:
    """One <tr> of a team page, with the whitespace around it that the Jinja loop gave."""
    retired = ' class="row-retired"' if row.lifecycle == "retired" else ""
    answered = _answered(row)
    return (
        f'\n      <tr{retired}>\n'
        f'        <td class="service-cell"><a href="{row_url("services.show", "service_id", row.service_id, patterns)}">'
        f'<strong>{escape(row.name)}</strong></a>\n          {lifecycle_badge(row)}</td>\n'
        f'        <td class="num">{row.tier}</td>\n'
        f'        {working_cell(row, patterns)}\n'
        f'        <td class="num score-cell">{score(row.score)}</td>\n'
        f'        <td>{charts.sparkline(row.trend, 120, 24)}</td>\n'
        f'        <td class="num">{answered}</td>\n'
        f'        {signed_cell(row, patterns)}\n'
        f'        {probe_cell(row, patterns)}\n'
        f'        {owner_cell(row)}\n'
        f'      </tr>\n    ')


def sort_header(query: Query, column: str, label: str, css: str = "") -> Markup:
    """A column heading that sorts on the server; the link keeps every filter."""
    active = query.sort == column
    url = url_for(request.endpoint, **dict(request.view_args or {}, **query.sorted_by(column)))
    if active:
        ascending = query.direction == "asc"
        aria = f' aria-sort="{"ascending" if ascending else "descending"}"'
        mark = "▲" if ascending else "▼"
    else:
        aria, mark = "", "↕"
    return Markup(f'\n  <th scope="col" class="sortable {css}"{aria}>\n    <a href="{escape(url)}">{escape(label)}'
                  f'<span class="sort-mark" aria-hidden="true">{mark}</span></a>\n  </th>')


def team_bars(summary: Summary, query: Query) -> Markup:
    """The "average score by team" tile: a bar per team, each a link filtering by it (or,
    for the team already chosen, clearing that filter)."""
    if not summary.by_team:
        return Markup('<p class="muted small">No services match.</p>')
    filter_by = url_with_slot("main.index", "team", query.args(team=_SLOT))
    parts = ['\n      <ol class="team-bars">\n        ']
    for team_id, name, count, average in summary.by_team:
        name = escape(name)
        if query.team == team_id:
            href, current = escape(url_for("main.index", **query.args(team=None))), ' aria-current="true"'
        else:
            href, current = escape(filter_by(team_id)), ""
        shown = "none" if average is None else f"{average:g}"
        parts.append(
            f'\n        <li>\n          <a href="{href}" class="team-bar-name" title="{name}"{current}>{name}</a>\n'
            f'          <meter min="0" max="100" low="70" high="85" optimum="100" value="{average or 0}" '
            f'aria-label="{name}: average score {shown}"></meter>\n'
            f'          <span class="num team-bar-value">{score(average)}</span>\n'
            f'          <span class="muted small num">{count} svc</span>\n        </li>\n        ')
    parts.append("\n      </ol>\n      ")
    return Markup("".join(parts))


def filter_options(choices: list[tuple[int, str]], selected: int | None) -> Markup:
    """<option>s of a filter menu (teams, owners), the current choice selected."""
    return Markup("".join(f'<option value="{id_}"{" selected" if id_ == selected else ""}>{escape(name)}</option>'
                          for id_, name in choices))


TEMPLATE_GLOBALS = {"short_verdict": short_verdict_chip, "sparkline_svg": charts.sparkline,
                    "dashboard_rows": dashboard_rows, "team_rows": team_rows, "sort_header": sort_header,
                    "team_bars": team_bars, "filter_options": filter_options}
