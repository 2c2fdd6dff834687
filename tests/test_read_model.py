"""The read model on Assessment stays equal to a fresh score, snapshots are written only when
the score moves, and a waiver lapsing with time is caught up."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select

from tests.factories import MembershipFactory, ServiceFactory
from webapp import assessments, catalog
from webapp.extensions import db
from webapp.models import Answer, Assessment, ScoreSnapshot, Waiver

CRITICAL = "secrets_in_environment"
ITEM = "structured_logging"


def started(app):
    catalog.sync(force=True)
    member = MembershipFactory(role="maintainer")
    service = ServiceFactory(team=member.team)
    assessment = assessments.start_assessment(service, catalog.latest_version("production-readiness"), member.user)
    db.session.commit()
    return member.user, assessment


def snapshots(assessment) -> int:
    return db.session.scalar(select(func.count()).select_from(ScoreSnapshot)
                             .where(ScoreSnapshot.assessment_id == assessment.id))


def test_stored_score_matches_a_fresh_score_and_snapshots_only_on_change(app):
    user, assessment = started(app)
    before = snapshots(assessment)
    assessments.record_answer(assessment, ITEM, "met", "", user)
    db.session.commit()
    card = assessments.scorecard(assessment)
    stored = db.session.get(Assessment, assessment.id)
    assert (stored.score, stored.verdict, stored.answered_pct, stored.unanswered_count, stored.blocker_count) == (
        card.score, card.verdict, card.percent_answered, len(card.unanswered), len(card.blockers))
    assert snapshots(assessment) == before + 1
    assessments.refresh_score(stored)  # nothing moved: no new snapshot
    db.session.commit()
    assert snapshots(assessment) == before + 1


def test_a_lapsed_waiver_is_rescored(app):
    user, assessment = started(app)
    assessments.record_answer(assessment, CRITICAL, "not_met", "pending", user)
    answer = db.session.scalar(select(Answer).where(Answer.item_key == CRITICAL))
    db.session.add(Waiver(answer_id=answer.id, reason="r", compensating_control="c", risk_owner_id=user.id,
                          expires_on=date(2026, 3, 1), state="approved", requested_by_id=user.id))
    db.session.commit()
    assessments.refresh_score(assessment, now=datetime(2026, 2, 1, tzinfo=UTC))
    db.session.commit()
    covered = db.session.get(Assessment, assessment.id).blocker_count  # the unanswered criticals
    assert assessments.rescore_lapsed_waivers(now=datetime(2026, 2, 20, tzinfo=UTC)) == 0  # not yet expired
    assert assessments.rescore_lapsed_waivers(now=datetime(2026, 3, 5, tzinfo=UTC)) == 1
    db.session.commit()
    stored = db.session.get(Assessment, assessment.id)
    assert stored.blocker_count == covered + 1 and stored.verdict == "not_ready"
    # Already caught up: the next run does nothing.
    assert assessments.rescore_lapsed_waivers(now=datetime(2026, 3, 6, tzinfo=UTC)) == 0
    assert stored.scored_at - datetime(2026, 3, 5, tzinfo=UTC) < timedelta(seconds=1)


def test_score_and_team_series_over_time(app):
    from webapp import timeline

    user, assessment = started(app)
    for key in (ITEM, "log_rotation", "metrics_exported"):
        assessments.record_answer(assessment, key, "met", "", user)
        db.session.commit()
    series = timeline.score_series(assessment.service_id)
    assert [s.label for s in series] == [assessment.checklist_version.title]
    scores = [score for _, score in series[0].points]
    assert scores == sorted(scores) and len(scores) == 4  # the empty start, then one per change
    team = timeline.team_series(assessment.service.team_id)
    assert team[0].points[-1][1] == scores[-1]  # one service: the average is its score
