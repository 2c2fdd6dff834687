"""Shared builders for the sign-off and report tests: people with roles, and assessments
with every applicable item answered."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.factories import MembershipFactory, ServiceFactory, UserFactory
from webapp import assessments, catalog
from webapp.extensions import db
from webapp.models import Answer, AnswerChange, Evidence


class Cast:
    """A team and a service (tier given) with an owner, a member who fills in, and an SRE,
    a security reviewer and a general reviewer."""

    def __init__(self, tier: int = 2):
        self.owner = UserFactory(name="Olive Owner")
        self.member = UserFactory(name="Mo Member")
        self.sre = UserFactory(name="Sam SRE", reviewer_roles=["sre"])
        self.security = UserFactory(name="Sec Reviewer", reviewer_roles=["security"])
        self.reviewer = UserFactory(name="Rae Reviewer", is_reviewer=True)
        self.outsider = UserFactory(name="Out Sider")
        self.service = ServiceFactory(tier=tier, owner=self.owner, name="Ledger API",
                                      oncall_url="https://oncall.example.test/ledger")
        MembershipFactory(team=self.service.team, user=self.owner, role="maintainer")
        MembershipFactory(team=self.service.team, user=self.member, role="member")
        db.session.flush()


def answered_assessment(service, author, status: str = "met", *, skip: tuple[str, ...] = (),
                        notes: bool = False, evidence: bool = False):
    """A draft with every applicable item answered (except `skip`), written directly."""
    catalog.sync()
    version = catalog.latest_version("production-readiness")
    assessment = assessments.start_assessment(service, version, author)
    now = datetime.now(UTC)
    for index, item in enumerate(assessments.checklist_for(assessment).items):
        if not item.applies_to(service.tier) or item.key in skip:
            continue
        note = ""
        if notes:
            note = (f"We checked **{item.title.lower()}** in the March game day; see the runbook "
                    f"section {index}.\n\n- owner: platform team\n- last reviewed: 2026-11-0{index % 9 + 1}")
        answer = Answer(item_key=item.key, status=status, note=note, source="manual",
                        answered_by_id=author.id, answered_at=now)
        assessment.answers.append(answer)
        answer.changes.append(AnswerChange(from_status=None, to_status=status, note=note,
                                           changed_by_id=author.id))
        if evidence:
            answer.evidence.append(Evidence(url=f"https://wiki.example.test/ledger/{item.key}",
                                            title=f"{item.title} — design doc", added_by_id=author.id,
                                            checked_at=now, check_ok=index % 7 != 0,
                                            check_error=None if index % 7 else "HTTP 404"))
    db.session.flush()
    assessments.refresh_score(assessment)
    return assessment
