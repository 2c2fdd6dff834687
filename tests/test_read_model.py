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


def test_the_hourly_job_rescores_lapsed_waivers(app):
    from webapp.probes.tasks import rescore_lapsed_waivers

    user, assessment = started(app)
    assessments.record_answer(assessment, CRITICAL, "not_met", "pending", user)
    answer = db.session.scalar(select(Answer).where(Answer.item_key == CRITICAL))
    db.session.add(Waiver(answer_id=answer.id, reason="r", compensating_control="c", risk_owner_id=user.id,
                          expires_on=date.today() - timedelta(days=2), state="approved", requested_by_id=user.id))
    db.session.commit()
    stored = db.session.get(Assessment, assessment.id)
    stored.scored_at = datetime.now(UTC) - timedelta(days=5)
    db.session.commit()
    assert rescore_lapsed_waivers.call_local() == 1


# The services' pointers to their working and signed-off assessment -------------------------

def pointers(service) -> tuple[int | None, int | None]:
    """What the database holds, read fresh (not from the identity map)."""
    from webapp.models import Service

    row = db.session.execute(select(Service.working_assessment_id, Service.signed_assessment_id)
                             .where(Service.id == service.id)).one()
    return tuple(row)


def correlated(service) -> tuple[int | None, int | None]:
    """What the correlated lookups the pointers replace would find."""
    from webapp.dashboard import _pointer_values

    _, _, _, working, signed = db.session.execute(_pointer_values([service.id])).one()
    return working, signed


def test_pointers_follow_draft_submit_reject_sign_off_and_supersede(app):
    from tests.signoff_helpers import Cast, answered_assessment
    from webapp import reviews

    cast = Cast(tier=3)
    role_holder = {"owner": cast.owner, "sre": cast.sre, "security": cast.security, "reviewer": cast.reviewer}
    service = cast.service
    db.session.commit()
    assert pointers(service) == (None, None)

    first = answered_assessment(service, cast.member)
    db.session.commit()
    assert pointers(service) == (first.id, None)
    assessments.submit_for_review(first, cast.member)
    db.session.commit()
    assert pointers(service) == (first.id, None)
    # A newer, empty draft never hides the one in review.
    newer = assessments.start_assessment(service, first.checklist_version, cast.member)
    db.session.commit()
    assert pointers(service) == (first.id, None)
    roles = reviews.required_roles(first)
    reviews.decide(first, role_holder[roles[0]], roles[0], "reject", "not yet")
    db.session.commit()
    assert first.state == "draft"
    assert pointers(service) == correlated(service) == (newer.id, None)  # back in draft: the newest
    db.session.delete(newer)  # a draft thrown away: the pointer moves back, never dangles
    db.session.commit()
    assert pointers(service) == (first.id, None)

    assessments.submit_for_review(first, cast.member)
    for role in roles:
        reviews.decide(first, role_holder[role], role, "approve")
    db.session.commit()
    assert first.state == "signed_off"
    assert pointers(service) == (None, first.id)
    # The next round supersedes the sign-off once it is signed off in turn.
    second = answered_assessment(service, cast.member)
    db.session.commit()
    assert pointers(service) == (second.id, first.id)
    assessments.submit_for_review(second, cast.member)
    for role in reviews.required_roles(second):
        reviews.decide(second, role_holder[role], role, "approve")
    db.session.commit()
    assert pointers(service) == correlated(service) == (None, second.id)
    # The loaded service sees it too, without a reload.
    assert (service.working_assessment_id, service.signed_assessment_id) == (None, second.id)


def test_pointers_when_an_assessment_moves_service_or_is_deleted(app):
    _, assessment = started(app)
    service = assessment.service
    other = ServiceFactory(team=service.team)
    db.session.commit()
    assert pointers(service) == (assessment.id, None)
    before = other.updated_at
    assessment.service_id = other.id
    db.session.commit()
    assert pointers(service) == (None, None) and pointers(other) == (assessment.id, None)
    assert db.session.get(type(other), other.id).updated_at == before  # not an edit of the service
    other.team = ServiceFactory().team  # the service moves team: its pointers stay
    db.session.commit()
    assert pointers(other) == (assessment.id, None)
    db.session.delete(assessment)
    db.session.commit()
    assert pointers(other) == (None, None)


def test_stored_pointers_equal_the_correlated_lookups_over_a_varied_history(app):
    """Property-style: random histories of states and times, through the ORM, and the
    stored pointers always agree with the lookups they replace."""
    import random

    from webapp.dashboard import _pointer_values, refresh_read_model
    from webapp.models import Service

    catalog.sync(force=True)
    version = catalog.latest_version("production-readiness")
    member = MembershipFactory(role="maintainer")
    services = [ServiceFactory(team=member.team) for _ in range(8)]
    db.session.commit()
    rng = random.Random(11)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    made: list[Assessment] = []
    for step in range(120):
        action = rng.random()
        if action < 0.35 or not made:
            made.append(Assessment(service_id=rng.choice(services).id, checklist_version_id=version.id,
                                   created_by_id=member.user_id, state=rng.choice(("draft", "in_review")),
                                   created_at=base + timedelta(hours=rng.randint(0, 50))))
            db.session.add(made[-1])
        elif action < 0.8:
            target = rng.choice(made)
            target.state = rng.choice(("draft", "in_review", "signed_off", "superseded"))
            if target.state == "signed_off":
                target.decided_at = base + timedelta(hours=rng.randint(0, 50))  # ties happen too
        elif action < 0.85:
            rng.choice(made).service_id = rng.choice(services).id
        elif action < 0.92:  # snapshots, sometimes of a pending assessment
            target = rng.choice(made)
            db.session.add(ScoreSnapshot(service_id=target.service_id or rng.choice(services).id,
                                         score=float(rng.randint(0, 100)), verdict="not_ready",
                                         at=base + timedelta(hours=rng.randint(0, 50))))
        else:
            doomed = made.pop(rng.randrange(len(made)))
            db.session.delete(doomed)
        if step % 3 == 0:
            db.session.commit()
            for sid, stored_w, stored_s, w, s in db.session.execute(_pointer_values()):
                assert (stored_w, stored_s) == (w, s), f"service {sid} at step {step}"
    db.session.commit()
    assert refresh_read_model() == 0  # the backstop finds nothing to fix
    assert db.session.scalar(select(func.count()).select_from(Service)
                             .where(Service.working_assessment_id.is_not(None))) > 0


def test_the_stored_trend_is_the_last_snapshot_scores(app):
    from webapp.dashboard import TREND_POINTS, score_trends, select_rows, service_row
    from webapp.dashboard import Query as DashboardQuery

    user, assessment = started(app)
    service = assessment.service
    for key in (ITEM, "log_rotation", "metrics_exported"):
        assessments.record_answer(assessment, key, "met", "", user)
        db.session.commit()
    stored = db.session.scalar(select(type(service).score_trend).where(type(service).id == service.id))
    assert stored == score_trends([service.id])[service.id] and len(stored) == 4
    for index in range(TREND_POINTS + 5):  # more than a trend holds: the last ones, oldest first
        db.session.add(ScoreSnapshot(service_id=service.id, score=float(index), verdict="not_ready",
                                     at=datetime(2030, 1, 1, tzinfo=UTC) + timedelta(hours=index)))
    db.session.commit()
    expected = tuple(float(i) for i in range(5, TREND_POINTS + 5))
    assert service_row(service.id).trend == expected
    assert select_rows(DashboardQuery(), user.id, limit=10)[0].trend == expected
    assert service_row(service.id, trend_points=3).trend == expected[-3:]
    assert len(service_row(service.id, trend_points=60).trend) == TREND_POINTS + 5 + 4  # past the stored
    db.session.delete(assessment)  # its snapshots go with it (ON DELETE CASCADE)
    db.session.commit()
    assert service_row(service.id).trend == expected
