"""In real Chromium: the dashboard filtered by team, verdict and "needs attention", sorted,
searched and paged, every link keeping the state; then screenshots of the dashboard at
1,280 and 1,920 px (nothing wider than the window) and of a service page with its uptime bar."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlparse

from tests.browser_support import follow
from tests.factories import MembershipFactory, ServiceFactory, TeamFactory, UserFactory
from tests.test_browser_history import sign_in
from webapp import catalog
from webapp.extensions import db
from webapp.models import Assessment, ProbeDailyRollup, RunbookRevision, ServiceCheck, utcnow


def state(url: str) -> dict[str, list[str]]:
    return parse_qs(urlparse(url).query)


def looked_after(team, name: str, *, score: float, verdict: str):
    """A service with nothing on the needs-attention list: owners, on-call, a fresh scored
    assessment and a reviewed runbook."""
    now = utcnow()
    owner, backup = UserFactory(name=f"{name} owner"), UserFactory()
    service = ServiceFactory(team=team, name=name, owner=owner, backup_owner=backup,
                             oncall_url="https://oncall.example.test/x", health_url="https://x.example.test/health")
    db.session.add(Assessment(service=service, checklist_version=catalog.latest_version("production-readiness"),
                              created_by_id=owner.id, created_at=now - timedelta(days=3), score=score,
                              verdict=verdict, answered_pct=100.0, scored_at=now))
    db.session.add(RunbookRevision(service_id=service.id, body="# Runbook", author_id=owner.id,
                                   created_at=now - timedelta(days=20), reviewed_at=now - timedelta(days=2)))
    for days_ago in range(1, 30):
        db.session.add(ProbeDailyRollup(service_id=service.id, kind="health", day=(now - timedelta(days=days_ago)).date(),
                                        runs=96, passes=96 if days_ago % 9 else 93, warns=0,
                                        fails=0 if days_ago % 9 else 3, errors=0))
    return service


def shown(page) -> list[str]:
    return page.locator("table.dash-table td.service-cell > a").all_inner_texts()


def test_dashboard_filters_sorts_searches_and_pages_keeping_state(page, app):
    app.test_cli_runner().invoke(args=["checklists", "sync"])
    member = MembershipFactory(role="member", team=TeamFactory(name="Search"))
    search = member.team
    payments = TeamFactory(name="Payments")
    for number in range(55):
        ServiceFactory(team=payments, name=f"pay {number:02d}")  # no owner, never assessed
    looked_after(search, "Calm search", score=92.0, verdict="ready")
    failing = looked_after(search, "Failing search", score=40.0, verdict="not_ready")
    failing.description = "Spec: https://wiki.example.test/" + "y" * 3000  # one long word: wraps, never widens
    db.session.add(ServiceCheck(service_id=failing.id, kind="health", outcome="fail", checked_at=utcnow(),
                                changed_at=utcnow()))
    db.session.commit()
    sign_in(page, member.user)
    base = page.base

    assert page.locator("text=1–50 of 57 services").count() == 1
    page.select_option("#f-team", str(search.id))
    follow(page, "form.dash-filters button[type=submit]")
    assert shown(page) == ["Calm search", "Failing search"]
    page.check("input[name=attention]")
    follow(page, "form.dash-filters button[type=submit]")
    assert state(page.url) == {"team": [str(search.id)], "attention": ["1"]}
    assert shown(page) == ["Failing search"]
    assert page.locator("a.todo-count").text_content().split() == ["⚑", "1"]

    page.select_option("#f-verdict", "ready")  # needs attention and ready: nothing
    follow(page, "form.dash-filters button[type=submit]")
    assert shown(page) == [] and page.locator("text=No service matches these filters.").count() == 1
    page.uncheck("input[name=attention]")
    follow(page, "form.dash-filters button[type=submit]")
    assert shown(page) == ["Calm search"]
    assert state(page.url) == {"team": [str(search.id)], "verdict": ["ready"]}

    page.goto(f"{base}/?team={search.id}&attention=1")
    follow(page, "a.todo-count")  # the count leads to that service's list
    assert state(page.url) == {"service": [str(failing.id)]}
    assert page.locator("h1", has_text="Needs attention: Failing search").count() == 1
    assert page.locator("text=Calm search").count() == 0

    page.goto(base + "/")  # sort: the heading flips the direction and keeps the filters
    page.check("input[name=attention]")
    follow(page, "form.dash-filters button[type=submit]")
    follow(page, "th.sortable a:has-text('Score')")
    assert state(page.url) == {"attention": ["1"], "sort": ["score"]}
    assert page.locator("th[aria-sort=descending]", has_text="Score").count() == 1
    assert shown(page)[0] == "Failing search"  # the only one scored; unscored go last
    follow(page, "th.sortable a:has-text('Service')")
    follow(page, "th.sortable a:has-text('Service')")
    assert state(page.url) == {"attention": ["1"], "dir": ["desc"]}
    assert shown(page)[:2] == ["pay 54", "pay 53"]

    follow(page, "nav.pagination a[rel=next]")  # pages keep the filter and the order
    assert state(page.url) == {"attention": ["1"], "dir": ["desc"], "page": ["2"]}
    assert page.locator("text=51–56 of 56 services").count() == 1
    assert shown(page) == ["pay 04", "pay 03", "pay 02", "pay 01", "pay 00", "Failing search"]
    csv_link = page.locator("a", has_text="Export CSV").get_attribute("href")
    assert state(csv_link) == {"attention": ["1"], "dir": ["desc"]}  # the export: every page, same filter
    assert page.locator("input[name=attention]").is_checked()
    assert page.locator("input[name=dir]").get_attribute("value") == "desc"  # the form keeps the order

    page.fill("#f-q", "pay 1")  # search keeps the order, back to page 1
    follow(page, "form.dash-filters button[type=submit]")
    assert state(page.url) == {"q": ["pay 1"], "attention": ["1"], "dir": ["desc"]}
    assert shown(page) == [f"pay {n}" for n in range(19, 9, -1)]
    follow(page, "text=Clear")
    assert state(page.url) == {} and page.locator("text=1–50 of 57 services").count() == 1

    for width in (1280, 1920):  # nothing clipped: the page and the table fit the window
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{base}/?attention=1")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert page.evaluate("(() => { const t = document.querySelector('.table-wrap');"
                             " return t.scrollWidth <= t.clientWidth; })()")
        page.screenshot(path=f"/tmp/preflight-dashboard-{width}.png", full_page=True)

    page.set_viewport_size({"width": 390, "height": 800})  # a phone: every link of the menu in view
    page.goto(f"{base}/services/{failing.id}")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.goto(f"{base}/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    edges = page.evaluate("[...document.querySelectorAll('.nav-links a')].map(a => a.getBoundingClientRect().right)")
    assert edges and max(edges) <= 390, edges

    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{base}/services/{failing.id}")
    bar = page.locator("svg.uptime-bar")
    assert bar.count() == 1 and bar.locator("rect").count() == 30
    assert "of 2,784 checks passed" in bar.get_attribute("aria-label")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.screenshot(path="/tmp/preflight-service.png", full_page=True)

    # A name with no spaces wraps beside the score and the Probe now button; the page never widens.
    failing.name = "Averyveryverylongservicenamewithoutanyspacesatallthatgoesonandonforeightychars"
    db.session.commit()
    for path in (f"/services/{failing.id}", f"/services/{failing.id}/probes"):
        page.goto(base + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280, path
        heading, aside = page.locator("h1").bounding_box(), page.locator(".score-block, .card-header form").first
        assert aside.bounding_box()["y"] < heading["y"] + heading["height"], path  # on the title's rows
