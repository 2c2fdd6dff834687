"""The read side: the dashboard, its filters, sorting, pages and exports; the service and team
pages; the read model kept by `flask assessments rescore` and written by `flask demo seed`;
and a fixed number of SQL statements per page, however many services and however much
history."""

from __future__ import annotations

import csv
import io
import re
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import delete, event, func, select, update

from tests.factories import MembershipFactory, ServiceFactory, TeamFactory, UserFactory
from webapp import assessments, catalog, dashboard, demo
from webapp.extensions import db
from webapp.models import (
    Assessment,
    ProbeDailyRollup,
    ProbeResult,
    ProbeRun,
    Report,
    ScoreSnapshot,
    Service,
    ServiceCheck,
    SignOff,
    Team,
    User,
    Waiver,
    utcnow,
)
from webapp.probes import history, runs

ITEM = "structured_logging"
CRITICAL = "secrets_in_environment"


@contextmanager
def counted_statements():
    """Counts every SQL statement the app sends while the block runs."""
    count = [0]

    def on_execute(*_args):
        count[0] += 1

    event.listen(db.engine, "before_cursor_execute", on_execute)
    try:
        yield count
    finally:
        event.remove(db.engine, "before_cursor_execute", on_execute)


def wipe() -> None:
    """Empty every table, as the autouse fixture does between tests."""
    db.session.remove()
    with db.engine.begin() as connection:
        for table in reversed(db.metadata.sorted_tables):
            connection.execute(table.delete())


def checklist_version():
    catalog.sync()
    return catalog.latest_version("production-readiness")


def assess(service, user, *, score=None, verdict=None, state="draft", answered=50.0, blockers=0,
           created_at=None):
    """An assessment row with the read model set as refresh_score would leave it (the app
    allows one open draft per checklist; these tests need histories of any shape)."""
    assessment = Assessment(service_id=service.id, checklist_version_id=checklist_version().id,
                            created_by_id=user.id, state=state, score=score or 0.0,
                            verdict=verdict or "not_ready", answered_pct=answered if score is not None else 0.0,
                            blocker_count=blockers, unanswered_count=0, scored_at=utcnow(),
                            created_at=created_at or utcnow(),
                            decided_at=utcnow() if state in ("signed_off", "superseded", "rejected") else None)
    db.session.add(assessment)
    db.session.flush()
    return assessment


@pytest.fixture
def person(auth):
    membership = MembershipFactory(role="maintainer", team__name="Payments")
    db.session.commit()
    auth.login(membership.user)
    return membership.user


def service_names(page_html: str, rows) -> list[str]:
    return [row.name for row in rows]


def rows_for(user, **args) -> list[dashboard.DashboardRow]:
    query = dashboard.Query.from_args({k: str(v) for k, v in args.items()})
    return dashboard.dashboard(query, user.id).rows


# The working assessment ------------------------------------------------------------------

def test_the_assessment_in_review_is_shown_not_a_newer_empty_draft(client, person):
    service = ServiceFactory(team=person.memberships[0].team, name="Ledger")
    reviewed = assessments.start_assessment(service, checklist_version(), person)
    for item in assessments.checklist_for(reviewed).items:  # submitting needs every item answered
        if item.applies_to(service.tier):
            assessments.record_answer(reviewed, item.key, "met" if item.key != ITEM else "partial", "", person)
    assessments.submit_for_review(reviewed, person)
    reviewed.created_at = utcnow() - timedelta(days=3)
    newer = assessments.start_assessment(service, checklist_version(), person)  # empty
    db.session.commit()
    reviewed_id, newer_id, reviewed_score = reviewed.id, newer.id, reviewed.score
    assert reviewed_score > 0 and newer.score == 0

    page = client.get("/").get_data(as_text=True)
    assert f"/assessments/{reviewed_id}" in page and f"/assessments/{newer_id}" not in page
    assert "in review" in page
    [row] = dashboard.select_rows(dashboard.Query(), person.id)
    assert (row.working.id, row.working.state, row.score) == (reviewed_id, "in_review", reviewed_score)


def test_newest_draft_is_the_working_one_when_none_is_in_review(person):
    service = ServiceFactory(team=person.memberships[0].team)
    assess(service, person, created_at=utcnow() - timedelta(days=9))
    newest = assess(service, person)
    db.session.commit()
    [row] = dashboard.select_rows(dashboard.Query(), person.id)
    assert row.working.id == newest.id


def test_signed_off_verdict_and_date_beside_the_working_score(client, person):
    service = ServiceFactory(team=person.memberships[0].team)
    assess(service, person, score=60, verdict="not_ready", state="superseded")
    signed = assess(service, person, score=91, verdict="ready", state="signed_off")
    working = assess(service, person, score=74.5, verdict="ready_with_conditions")
    db.session.commit()
    [row] = dashboard.select_rows(dashboard.Query(), person.id)
    assert row.signed_off.id == signed.id and row.signed_off.verdict == "ready"
    assert row.working.id == working.id and row.verdict == "ready_with_conditions" and row.score == 74.5
    page = client.get("/").get_data(as_text=True)
    assert "74.5" in page and signed.decided_at.strftime("%Y-%m-%d") in page


def test_score_shown_is_the_one_scoring_computes(client, person):
    service = ServiceFactory(team=person.memberships[0].team)
    assessment = assessments.start_assessment(service, checklist_version(), person)
    assessments.record_answer(assessment, ITEM, "met", "", person)
    assessments.record_answer(assessment, CRITICAL, "partial", "", person)
    db.session.commit()
    card = assessments.scorecard(assessment)
    [row] = dashboard.select_rows(dashboard.Query(), person.id)
    assert (row.score, row.verdict, row.working.answered_pct) == (card.score, card.verdict, card.percent_answered)
    assert row.working.blocker_count == len(card.blockers) >= 1


# Sorting, filtering, search, pages --------------------------------------------------------

@pytest.fixture
def portfolio(person):
    """Five services across two teams, tiers, lifecycles and verdicts."""
    mine = person.memberships[0].team
    other = TeamFactory(name="Search")
    owner = UserFactory(name="Grace Hopper")
    specs = [  # name, team, tier, lifecycle, score, verdict, owner
        ("Alpha gateway", mine, 1, "live", 92.0, "ready", person),
        ("Beta ledger", mine, 2, "launching", 71.0, "ready_with_conditions", None),
        ("Gamma index", other, 1, "live", 40.0, "not_ready", owner),
        ("Delta crawler", other, 3, "planned", None, None, owner),
        ("Old batch", other, 2, "retired", 88.0, "ready", owner),
    ]
    for name, team, tier, lifecycle, score, verdict, who in specs:
        service = ServiceFactory(team=team, name=name, tier=tier, owner_id=who.id if who else None)
        if score is not None:
            assess(service, person, score=score, verdict=verdict)
        service.lifecycle = lifecycle  # assessed before it was retired
    db.session.commit()
    return {"mine": mine, "other": other, "owner": owner}


def names(rows) -> list[str]:
    return [row.name for row in rows]


def test_default_view_hides_retired_services_and_sorts_by_name(client, person, portfolio):
    assert names(rows_for(person)) == ["Alpha gateway", "Beta ledger", "Delta crawler", "Gamma index"]
    page = client.get("/").get_data(as_text=True)
    assert "Old batch" not in page and "1–4 of 4 services" in page


@pytest.mark.parametrize(("args", "expected"), [
    ({"sort": "score"}, ["Alpha gateway", "Beta ledger", "Gamma index", "Delta crawler"]),  # unscored last
    ({"sort": "score", "dir": "asc"}, ["Gamma index", "Beta ledger", "Alpha gateway", "Delta crawler"]),
    ({"sort": "name", "dir": "desc"}, ["Gamma index", "Delta crawler", "Beta ledger", "Alpha gateway"]),
    ({"sort": "verdict", "dir": "desc"}, ["Alpha gateway", "Beta ledger", "Gamma index", "Delta crawler"]),
    ({"sort": "tier"}, ["Alpha gateway", "Gamma index", "Beta ledger", "Delta crawler"]),
    ({"sort": "owner"}, ["Alpha gateway", "Delta crawler", "Gamma index", "Beta ledger"]),
])
def test_sorting_on_the_server(client, person, portfolio, args, expected):
    if args.get("sort") == "owner":
        expected = sorted(expected[:3], key=lambda n: {"Alpha gateway": person.name, "Delta crawler": "Grace Hopper",
                                                       "Gamma index": "Grace Hopper"}[n].lower() + n.lower()) + expected[3:]
    assert names(rows_for(person, **args)) == expected
    page = client.get("/", query_string=args).get_data(as_text=True)
    positions = [page.index(f">{name}</a>") for name in expected]
    assert positions == sorted(positions)


@pytest.mark.parametrize(("args", "expected"), [
    ({"tier": 1}, ["Alpha gateway", "Gamma index"]),
    ({"verdict": "ready"}, ["Alpha gateway"]),
    ({"verdict": "not_assessed"}, ["Delta crawler"]),
    ({"lifecycle": "retired"}, ["Old batch"]),
    ({"lifecycle": "all", "verdict": "ready"}, ["Alpha gateway", "Old batch"]),
    ({"lifecycle": "launching"}, ["Beta ledger"]),
    ({"q": "LEDG"}, ["Beta ledger"]),
    ({"q": "search"}, ["Delta crawler", "Gamma index"]),  # the team's name
    ({"q": "hopper"}, ["Delta crawler", "Gamma index"]),  # the owner's name
    ({"q": "100%_"}, []),  # LIKE wildcards are literal
    ({"mine": "1"}, ["Alpha gateway", "Beta ledger"]),
])
def test_filters_and_search(client, person, portfolio, args, expected):
    assert names(rows_for(person, **args)) == expected
    response = client.get("/", query_string=args)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for name in ["Alpha gateway", "Beta ledger", "Gamma index", "Delta crawler", "Old batch"]:
        assert (f">{name}</a>" in page) == (name in expected), name


def test_team_and_owner_filters(person, portfolio):
    assert names(rows_for(person, team=portfolio["mine"].id)) == ["Alpha gateway", "Beta ledger"]
    assert names(rows_for(person, owner=portfolio["owner"].id)) == ["Delta crawler", "Gamma index"]


def test_mine_includes_services_i_own_or_back_up_outside_my_teams(person, portfolio):
    other = db.session.scalar(select(Service).where(Service.name == "Gamma index"))
    other.backup_owner_id = person.id
    db.session.commit()
    assert names(rows_for(person, mine=1)) == ["Alpha gateway", "Beta ledger", "Gamma index"]


def test_summary_tiles_count_what_the_filters_match(client, person, portfolio):
    summary = dashboard.summary(dashboard.Query(), person.id)
    assert summary.total == 4
    assert summary.by_verdict == {"ready": 1, "ready_with_conditions": 1, "not_ready": 1, "not_assessed": 1}
    assert summary.by_tier == {1: 2, 2: 1, 3: 1}
    assert [(name, n, avg) for _id, name, n, avg in summary.by_team] == [("Payments", 2, 81.5), ("Search", 2, 40.0)]
    page = client.get("/?tier=1").get_data(as_text=True)
    assert 'href="/?tier=1&amp;verdict=ready"' in page  # a tile adds its filter to the others


def test_team_bars_filter_by_their_team_keeping_the_other_filters(client, person, portfolio):
    """The bars' links are formatted from one url_for a page (dashboard_html.url_with_slot)."""
    mine, other = portfolio["mine"].id, portfolio["other"].id
    page = client.get("/?q=a&sort=score&dir=asc&tier=1").get_data(as_text=True)
    for team_id in (mine, other):
        assert f'<a href="/?q=a&amp;team={team_id}&amp;tier=1&amp;sort=score&amp;dir=asc" class="team-bar-name"' in page
    chosen = client.get(f"/?q=a&team={other}").get_data(as_text=True)
    assert '<a href="/?q=a" class="team-bar-name" title="Search" aria-current="true">Search</a>' in chosen
    assert f'<option value="{other}" selected>Search</option>' in chosen


@pytest.mark.parametrize("q", ["%00", "\0", "x"])
def test_a_url_with_a_slot_is_the_url_for_of_each_value(app, q):
    """A literal "%00" is written %2500, so it is never taken for the slot; a NUL (refused in
    requests) would be, and then every URL falls back to url_for."""
    from flask import url_for

    from webapp.dashboard_html import _SLOT, url_with_slot

    with app.test_request_context("/"):
        build = url_with_slot("main.index", "team", {"q": q, "team": _SLOT, "sort": "score"})
        assert [build(n) for n in (1, 22)] == [url_for("main.index", q=q, team=n, sort="score") for n in (1, 22)]


def test_a_service_only_signed_off_shows_that_assessments_answered_share_and_blockers(client, person):
    team = person.memberships[0].team
    service = ServiceFactory(team=team, name="Signed only", tier=1)
    assess(service, person, score=88.9, verdict="not_ready", state="signed_off", answered=100.0, blockers=1)
    assess(ServiceFactory(team=team, name="Drafting", tier=1), person, score=50.0, verdict="not_ready", blockers=0)
    db.session.commit()
    html = client.get("/?q=signed+only").get_data(as_text=True)
    row = html[html.index(">Signed only</a>"):]
    row = row[:row.index("</tr>")]
    assert '<span title="Of the signed-off assessment">100%</span><span class="blockers"' in row
    assert "1 blocker" in row
    exported = client.get("/dashboard.csv?q=signed+only").get_data(as_text=True).removeprefix("\ufeff").splitlines()
    record = dict(zip(exported[0].split(","), exported[1].split(","), strict=True))
    assert (record["answered_pct"], record["blockers"], record["unanswered"]) == ("100.0", "1", "0")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", record["signed_off_at"])  # a date to a spreadsheet
    signed = client.get("/dashboard.json?q=signed+only").get_json()["services"][0]["signed_off"]
    assert (signed["answered_pct"], signed["blockers"]) == (100.0, 1)
    by_blockers = client.get("/?sort=blockers").get_data(as_text=True)  # most first
    assert by_blockers.index(">Signed only</a>") < by_blockers.index(">Drafting</a>")


def test_nonsense_arguments_are_ignored_not_a_500_and_the_page_says_which(client, person, portfolio):
    response = client.get("/?page=abc&tier=9&sort=drop+table&dir=sideways&verdict=great&team=x&lifecycle=zombie"
                          "&q=beta")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "1–1 of 1 service" in html
    notice = html[html.index("part of it was ignored"):]
    notice = notice[:notice.index("</div>")]
    ignored = ["team=x", "tier=9", "verdict=great", "lifecycle=zombie", "sort=drop table", "dir=sideways", "page=abc"]
    assert [arg for arg in ignored if f"<code>{arg}</code>" in notice] == ignored
    assert 'href="/?q=beta">Link to what is shown</a>' in notice  # what was kept, nothing else
    clean = client.get("/?q=beta&tier=2&sort=score").get_data(as_text=True)
    assert "was ignored" not in clean
    hostile = client.get("/?tier=<script>alert(1)</script>").get_data(as_text=True)
    assert "<code>tier=&lt;script&gt;alert(1)&lt;/script&gt;</code>" in hostile


def test_pages_of_fifty_with_links_that_keep_the_state(client, person):
    team = person.memberships[0].team
    for number in range(120):
        ServiceFactory(team=team, name=f"svc {number:03d}", tier=2)
    db.session.commit()
    page = client.get("/?tier=2&sort=name&dir=desc&page=2").get_data(as_text=True)
    assert "51–100 of 120 services" in page
    assert ">svc 069</a>" in page and ">svc 020</a>" in page and ">svc 070</a>" not in page
    assert 'href="/?tier=2&amp;dir=desc&amp;page=3"' in page  # next page keeps filter and sort
    assert 'href="/?tier=2&amp;sort=score"' in page  # a heading keeps the filter, back to page 1
    last = client.get("/?tier=2&page=99").get_data(as_text=True)  # past the end: the last page
    assert "101–120 of 120 services" in last
    assert "<code>page=99 (there are 3)</code>" in last
    assert 'href="/?tier=2&amp;page=3">Link to what is shown</a>' in last


# Exports ---------------------------------------------------------------------------------

def test_csv_export_has_the_same_rows_in_the_same_order(client, person, portfolio):
    ServiceFactory(team=portfolio["mine"], name="=HYPERLINK(\"http://evil.test\")", tier=3)
    db.session.commit()
    response = client.get("/dashboard.csv?sort=score&lifecycle=all")
    assert response.status_code == 200 and response.content_type == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.get_data().startswith(b"\xef\xbb\xbfservice_id,")  # UTF-8 with its mark, for Excel
    rows = list(csv.DictReader(io.StringIO(response.get_data().decode("utf-8-sig"))))
    assert [r["service"] for r in rows] == [
        "Alpha gateway", "Old batch", "Beta ledger", "Gamma index", "'=HYPERLINK(\"http://evil.test\")", "Delta crawler"]
    alpha = rows[0]
    assert (alpha["team"], alpha["tier"], alpha["verdict"], alpha["score"], alpha["working_state"]) == (
        "Payments", "1", "ready", "92.0", "draft")
    assert rows[-1]["verdict"] == "" and rows[-1]["score"] == ""


def test_json_export_follows_the_filters(client, person, portfolio):
    data = client.get(f"/dashboard.json?team={portfolio['other'].id}").get_json()
    assert data["count"] == 2
    gamma = next(s for s in data["services"] if s["service"]["name"] == "Gamma index")
    assert gamma["verdict"] == "not_ready" and gamma["score"] == 40.0
    assert gamma["team"]["name"] == "Search" and gamma["owner"]["name"] == "Grace Hopper"
    assert gamma["working"]["state"] == "draft" and gamma["signed_off"] is None


def test_exports_need_sign_in(client):
    assert client.get("/dashboard.csv").status_code == 302
    assert client.get("/dashboard.json").status_code == 302


# Service and team pages --------------------------------------------------------------------

def test_service_page_lists_history_with_stored_scores(client, person):
    service = ServiceFactory(team=person.memberships[0].team, name="Ledger")
    old = assess(service, person, score=55.5, verdict="not_ready", state="superseded")
    signed = assess(service, person, score=88.8, verdict="ready", state="signed_off")
    assess(service, person, score=77.7, verdict="ready_with_conditions", state="in_review")
    db.session.commit()
    page = client.get(f"/services/{service.id}").get_data(as_text=True)
    for value in ("55.5", "88.8", "77.7", "In review", "Signed off"):
        assert value in page
    assert f"/assessments/{old.id}" in page and f"/assessments/{signed.id}" in page


def test_service_page_says_when_an_assessment_was_never_scored(client, person):
    service = ServiceFactory(team=person.memberships[0].team)
    assessment = assess(service, person)
    db.session.execute(update(Assessment).where(Assessment.id == assessment.id).values(scored_at=None))
    db.session.commit()
    assert "flask assessments rescore" in client.get(f"/services/{service.id}").get_data(as_text=True)


def _health(service, at, outcome, kind="health"):
    run = ProbeRun(service_id=service.id, trigger="schedule", started_at=at)
    db.session.add(run)
    db.session.flush()
    db.session.add(ProbeResult(run_id=run.id, service_id=service.id, kind=kind, url="https://x.test/health",
                               started_at=at, finished_at=at, outcome=outcome, explanation=outcome))


def _rollup(service, day, runs, passes, **bad):
    db.session.add(ProbeDailyRollup(service_id=service.id, kind="health", day=day, runs=runs, passes=passes,
                                    **{"warns": 0, "fails": 0, "errors": 0, **bad}))


def test_daily_health_counts_raw_results_and_roll_ups_per_utc_day(person):
    service = ServiceFactory(team=person.memberships[0].team)
    for at, outcome in (((6, 10, 1), "pass"), ((6, 10, 11), "warn"), ((6, 9, 23), "fail"), ((5, 1, 12), "error")):
        _health(service, datetime(2026, *at, tzinfo=UTC), outcome)
    _health(service, datetime(2026, 6, 10, 2, tzinfo=UTC), "error", kind="readiness")  # another kind
    _rollup(service, date(2026, 6, 9), 10, 10)  # the same day as a raw result: both count
    _rollup(service, date(2026, 6, 1), 96, 90, errors=6)
    db.session.commit()
    days = history.daily(service.id, "health", days=10, now=datetime(2026, 6, 10, 12, tzinfo=UTC))
    assert [d.day for d in (days[0], days[-1])] == [date(2026, 6, 1), date(2026, 6, 10)] and len(days) == 10
    assert (days[-1].runs, days[-1].passes, days[-1].worst) == (2, 1, "warn")
    assert (days[-2].runs, days[-2].passes, days[-2].worst) == (11, 10, "fail")
    assert (days[0].runs, days[0].passes, days[0].worst) == (96, 90, "error")
    assert (days[1].runs, days[1].worst) == (0, None)


def test_service_page_shows_probe_uptime_day_by_day(client, person):
    team = person.memberships[0].team
    service = ServiceFactory(team=team, health_url="https://ledger.example.test/health")
    today = utcnow().date()
    _rollup(service, today - timedelta(days=3), 96, 95, fails=1)
    _rollup(service, today - timedelta(days=45), 96, 0, errors=96)  # before the 30 days shown
    unprobed = ServiceFactory(team=team)
    db.session.commit()
    page = client.get(f"/services/{service.id}").get_data(as_text=True)
    bar = page.split('class="chart uptime-bar"')[1].split("</svg>")[0]
    assert bar.count("<rect") == 30
    assert "98.95% of 96 checks passed" in bar  # 95 of 96, never rounded up
    assert f"{today - timedelta(days=3):%d %b %Y}: 98.95% of 96 passed, worst fail" in bar
    assert f"{today:%d %b %Y}: no checks" in bar
    assert f'href="/services/{service.id}/probes"' in page
    other = client.get(f"/services/{unprobed.id}").get_data(as_text=True)
    assert "No health URL, so nothing is probed." in other and "uptime-bar" not in other


def test_team_page_shows_its_services_with_verdicts_and_members(client, person, portfolio):
    page = client.get(f"/teams/{portfolio['other'].id}").get_data(as_text=True)
    assert ">Gamma index</strong>" in page and ">Old batch</strong>" in page  # retired too, marked
    assert "Alpha gateway" not in page
    assert "Average score" in page


# A fixed number of queries ---------------------------------------------------------------

def statements_per_page(client) -> dict[str, int]:
    team_id = db.session.scalar(select(Team.id).order_by(Team.id).limit(1))
    service_id = db.session.scalar(select(Assessment.service_id).group_by(Assessment.service_id)
                                   .order_by(func.count().desc(), Assessment.service_id).limit(1))
    admin = db.session.scalar(select(User).where(User.is_admin))
    db.session.remove()
    client.post("/login", data={"email": admin.email, "password": demo.PASSWORD})
    counts = {}
    for name, path in (("dashboard", "/"), ("dashboard sorted, filtered", "/?sort=score&dir=asc&lifecycle=all&q=e"),
                       ("dashboard needing attention", "/?attention=1&sort=probes&team=" + str(team_id)),
                       ("team", f"/teams/{team_id}"), ("service", f"/services/{service_id}")):
        client.get(path)  # first use of a checklist parses it; not what we count
        with counted_statements() as count:
            assert client.get(path).status_code == 200
        counts[name] = count[0]
    client.post("/logout")
    return counts


def test_pages_cost_the_same_queries_at_10_and_200_services_and_long_histories(client):
    demo.seed(services=10, assessments_per_service=3)
    db.session.commit()
    small = statements_per_page(client)
    wipe()
    demo.seed(services=200, assessments_per_service=2)
    db.session.commit()
    many_services = statements_per_page(client)
    wipe()
    demo.seed(services=10, assessments_per_service=30)
    db.session.commit()
    long_history = statements_per_page(client)

    assert small == many_services == long_history
    assert small["dashboard"] <= 10 and small["dashboard sorted, filtered"] <= 10
    assert small["dashboard needing attention"] <= 10
    assert small["team"] <= 15 and small["service"] <= 10


# The read model: rescore and demo data ---------------------------------------------------

def test_rescore_fills_missing_scores_keeps_last_assessed_and_is_idempotent(runner, person):
    service = ServiceFactory(team=person.memberships[0].team)
    assessment = assessments.start_assessment(service, checklist_version(), person)
    assessments.record_answer(assessment, ITEM, "met", "", person)
    db.session.commit()
    expected = (assessment.score, assessment.verdict, assessment.answered_pct, assessment.unanswered_count)
    db.session.execute(update(Assessment).values(score=0, verdict="not_ready", answered_pct=0,
                                                 unanswered_count=0, scored_at=None))
    db.session.commit()
    updated_at = db.session.scalar(select(Assessment.updated_at))

    result = runner.invoke(args=["assessments", "rescore"])
    assert result.exit_code == 0 and "rescored 1 assessment(s)" in result.output
    db.session.expire_all()
    stored = db.session.get(Assessment, assessment.id)
    assert (stored.score, stored.verdict, stored.answered_pct, stored.unanswered_count) == expected
    assert stored.scored_at is not None and stored.updated_at == updated_at
    assert "rescored 0 assessment(s)" in runner.invoke(args=["assessments", "rescore"]).output
    assert "rescored 1 assessment(s)" in runner.invoke(args=["assessments", "rescore", "--all"]).output


def test_rescore_picks_up_a_waiver_that_expired_after_scoring(runner, person):
    service = ServiceFactory(team=person.memberships[0].team, tier=2)
    assessment = assessments.start_assessment(service, checklist_version(), person)
    assessments.record_answer(assessment, CRITICAL, "not_met", "", person)
    reviewer = UserFactory(is_reviewer=True)
    waiver = assessments.request_waiver(assessment, CRITICAL, "legacy", "manual rotation", person,
                                        utcnow().date() + timedelta(days=5), person)
    assessments.decide_waiver(waiver, True, reviewer)
    db.session.commit()
    blockers_while_waived = assessment.blocker_count
    # The waiver runs out; nothing touched the assessment since.
    db.session.execute(update(Waiver).values(expires_on=utcnow().date() - timedelta(days=1)))
    db.session.execute(update(Assessment).values(scored_at=utcnow() - timedelta(days=3)))
    db.session.commit()

    assert "rescored 1 assessment(s)" in runner.invoke(args=["assessments", "rescore"]).output
    db.session.expire_all()
    assert db.session.get(Assessment, assessment.id).blocker_count == blockers_while_waived + 1
    assert "rescored 0 assessment(s)" in runner.invoke(args=["assessments", "rescore"]).output


def test_demo_seed_writes_the_read_model_that_scoring_gives(runner):
    result = runner.invoke(args=["demo", "seed", "--services", "30", "--assessments", "4", "--reports", "1"])
    assert result.exit_code == 0, result.output
    assert "30 service" in result.output and "1 report" in result.output and demo.PASSWORD in result.output
    stored = {a.id: (a.score, a.verdict, a.answered_pct, a.unanswered_count, a.blocker_count, a.updated_at)
              for a in db.session.scalars(select(Assessment))}
    assert dashboard.rescore(everything=True) == len(stored) > 0
    db.session.flush()
    again = {a.id: (a.score, a.verdict, a.answered_pct, a.unanswered_count, a.blocker_count, a.updated_at)
             for a in db.session.scalars(select(Assessment))}
    assert again == stored
    # Submitted once: "Rejected in review round 1", as a real first submission says.
    assert set(db.session.scalars(select(Assessment.review_round).where(Assessment.state != "draft"))) == {1}
    db.session.rollback()
    # Every verdict, tier and lifecycle is there, with probe outcomes and trends.
    summary = dashboard.summary(dashboard.Query(lifecycle="all"), None)
    assert all(summary.by_verdict[v] > 0 for v in ("ready", "ready_with_conditions", "not_ready"))
    assert all(summary.by_tier[t] > 0 for t in (1, 2, 3))
    lifecycles = set(db.session.scalars(select(Service.lifecycle)))
    assert lifecycles == {"planned", "launching", "live", "retired"}
    assert db.session.scalar(select(func.count()).select_from(ServiceCheck)) > 0
    assert db.session.scalar(select(func.count()).select_from(ScoreSnapshot)) > 0
    with pytest.raises(demo.DemoError, match="already here"):
        demo.seed(services=3)
    # Seeding again extends what is here: an older seed had no approvals behind its sign-offs
    # and no stored reports; they are added, and a third run adds nothing.
    db.session.execute(delete(Report))
    db.session.execute(delete(SignOff))
    db.session.commit()
    signed = db.session.scalar(select(func.count()).select_from(Assessment)
                               .where(Assessment.state.in_(("signed_off", "superseded"))))
    current = db.session.scalar(select(func.count()).select_from(Assessment)
                                .where(Assessment.state == "signed_off"))
    assert signed >= current > 0
    extended = runner.invoke(args=["demo", "seed", "--reports", "2"])
    assert extended.exit_code == 0, extended.output
    assert f"extended it with {2 * signed:,} sign_off, {min(2, current)} report" in extended.output
    assert db.session.scalar(select(func.count()).select_from(SignOff)) == 2 * signed
    reports = db.session.scalars(select(Report)).all()
    assert len(reports) == min(2, current) and all(r.assessment.state == "signed_off" for r in reports)
    again = runner.invoke(args=["demo", "seed", "--reports", "2"])
    assert again.exit_code == 0 and "0 sign_off, 0 report" in again.output


def test_demo_seed_is_deterministic(app):
    demo.seed(services=8, assessments_per_service=3, seed=11)
    db.session.commit()
    first = [(s.name, s.tier, s.lifecycle) for s in db.session.scalars(select(Service).order_by(Service.id))]
    scores = list(db.session.scalars(select(Assessment.score).order_by(Assessment.id)))
    wipe()
    demo.seed(services=8, assessments_per_service=3, seed=11)
    db.session.commit()
    assert [(s.name, s.tier, s.lifecycle) for s in db.session.scalars(select(Service).order_by(Service.id))] == first
    assert list(db.session.scalars(select(Assessment.score).order_by(Assessment.id))) == scores


# Probe outcomes through the read model -----------------------------------------------------

def _result(service, kind, outcome, minutes_ago):
    run = ProbeRun(service_id=service.id, trigger="schedule")
    db.session.add(run)
    db.session.flush()
    at = utcnow() - timedelta(minutes=minutes_ago)
    row = ProbeResult(run_id=run.id, service_id=service.id, kind=kind, url="https://x.test/health",
                      started_at=at, finished_at=at, outcome=outcome, explanation=outcome)
    db.session.add(row)
    db.session.flush()
    return row


def test_latest_results_and_dashboard_read_service_check(client, person):
    service = ServiceFactory(team=person.memberships[0].team)
    _result(service, "health", "fail", 30)
    newest_health = _result(service, "health", "pass", 5)
    tls = _result(service, "tls_expiry", "warn", 10)
    db.session.commit()
    # Before ServiceCheck rows exist (data older than the read model): newest raw result per kind.
    assert {k: r.id for k, r in runs.latest_results(service).items()} == {"health": newest_health.id, "tls_expiry": tls.id}
    for row in (newest_health, tls):
        runs.record_latest(row)
    db.session.commit()
    assert {k: r.id for k, r in runs.latest_results(service).items()} == {"health": newest_health.id, "tls_expiry": tls.id}
    [row] = dashboard.select_rows(dashboard.Query(), person.id)
    assert row.probe_outcome == "warn"  # the worst of the latest outcomes
    assert "Warn" in client.get("/").get_data(as_text=True)


def test_names_from_the_database_are_escaped_in_the_rows(client, person):
    """The rows are built in Python (webapp/dashboard_html.py), not by Jinja's autoescape."""
    owner = UserFactory(name="<script>alert('owner')</script>", email='o"wner@example.test')
    service = ServiceFactory(name="<script>alert('svc')</script>", owner=owner, lifecycle="launching",
                             team=TeamFactory(name="<script>alert('team')</script>"))
    MembershipFactory(team=service.team, user=person, role="member")
    assess(service, person, score=40.0)
    db.session.commit()
    for path in ("/", "/?attention=1", f"/teams/{service.team_id}"):
        html = client.get(path).get_data(as_text=True)
        assert "<script>alert(" not in html, path
        assert "&lt;script&gt;alert(&#39;svc&#39;)&lt;/script&gt;" in html, path
        assert "&lt;script&gt;alert(&#39;owner&#39;)&lt;/script&gt;" in html, path
        assert 'title="o&#34;wner@example.test"' in html, path
    home = client.get("/").get_data(as_text=True)
    assert '">&lt;script&gt;alert(&#39;team&#39;)&lt;/script&gt;</a></td>' in home
    team = "&lt;script&gt;alert(&#39;team&#39;)&lt;/script&gt;"  # in its bar and in the menus, drawn in Python too
    assert f'class="team-bar-name" title="{team}">{team}</a>' in home
    assert f'aria-label="{team}: average score 40"' in home
    assert f'<option value="{service.team_id}">{team}</option>' in home
    assert f'<option value="{owner.id}">&lt;script&gt;alert(&#39;owner&#39;)&lt;/script&gt;</option>' in home
