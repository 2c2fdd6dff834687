import pytest
from webapp import assessments, reviews
from webapp.extensions import db
from tests.signoff_helpers import Cast, answered_assessment

def test_smoke(app):
    cast = Cast(tier=2)
    a = answered_assessment(cast.service, cast.member, notes=True, evidence=True)
    assessments.submit_for_review(a, cast.member)
    reviews.decide(a, cast.owner, "owner", "approve")
    reviews.decide(a, cast.sre, "sre", "approve")
    db.session.commit()
    assert a.state == "signed_off"
    from webapp.models import Report
    r = db.session.scalars(db.select(Report)).one()
    open("/tmp/smoke.pdf","wb").write(r.pdf)
    print(len(r.pdf))
