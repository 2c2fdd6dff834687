"""Reports: download the stored signed PDF, export a watermarked draft, verify a PDF or a
SHA-256; and the launch review meeting mode (a projector view ending in the sign-off form)."""

from __future__ import annotations

from flask import Blueprint, Response, render_template
from flask_login import login_required

from webapp import assessments, dashboard, flags, reports
from webapp.extensions import db
from webapp.forms import VerifyReportForm
from webapp.models import Assessment, Report

bp = Blueprint("reports", __name__)

MAX_VERIFY_BYTES = 20 * 1024 * 1024


def _pdf_response(data: bytes, filename: str) -> Response:
    response = Response(data, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.get("/reports/<int:report_id>.pdf")
@login_required
def download(report_id: int):
    """The stored signed PDF, byte for byte as issued."""
    report = db.get_or_404(Report, report_id)
    service = report.assessment.service
    return _pdf_response(report.pdf, f"preflight-{service.slug}-report-{report.id}.pdf")


@bp.get("/assessments/<int:assessment_id>/export.pdf")
@login_required
def draft_export(assessment_id: int):
    """The assessment as it stands, watermarked "DRAFT — not signed off" and unsigned.
    A signed-off assessment's export is its stored report instead."""
    assessment = db.get_or_404(Assessment, assessment_id)
    stored = db.session.scalar(db.select(Report).where(Report.assessment_id == assessment.id)
                               .order_by(Report.id.desc()).limit(1))
    if stored is not None:
        return _pdf_response(stored.pdf, f"preflight-{assessment.service.slug}-report-{stored.id}.pdf")
    flags.require("pdf_export")  # rendering costs seconds of CPU in a web worker
    data = reports.draft_pdf(assessment)
    db.session.rollback()  # GET never writes: drop anything rendering loaded into the session
    return _pdf_response(data, f"preflight-{assessment.service.slug}-assessment-{assessment.id}-DRAFT.pdf")


@bp.route("/reports/verify", methods=["GET", "POST"])
@login_required
def verify():
    """Upload a PDF or paste a SHA-256: is it a genuine report of this instance?"""
    form = VerifyReportForm()
    result = None
    if form.validate_on_submit():
        upload = form.pdf.data
        if upload:
            data = upload.read(MAX_VERIFY_BYTES + 1)
            if len(data) > MAX_VERIFY_BYTES:
                form.pdf.errors.append("That file is larger than any report (20 MB at most).")
            else:
                result = reports.verify_pdf(data)
        elif form.sha256.data:
            result = reports.verify_sha256(form.sha256.data)
        else:
            form.sha256.errors.append("Upload a PDF or paste its SHA-256.")
    return render_template("reports/verify.html", form=form, result=result), 400 if form.errors else 200


def meeting_context(assessment: Assessment, form=None) -> dict:
    from webapp.views.reviews import issued_reports, review_context

    checklist = assessments.checklist_for(assessment)
    card = assessments.scorecard(assessment)
    answers = assessments.answers_by_key(assessment)
    tier = assessment.service.tier
    order = {"not_met": 0, "partial": 1, None: 2, "met": 3, "n_a": 4}
    slides = []
    for category in checklist.categories:
        items = [i for i in category.items if i.applies_to(tier)]
        if not items:
            continue
        items.sort(key=lambda i: (order.get(answers[i.key].status if i.key in answers else None, 2),
                                  not i.critical))
        slides.append((category, card.categories.get(category.key), items))
    return dict(review_context(assessment, form), card=card, answers=answers, slides=slides,
                trend=dashboard.score_trend(assessment.service), reports=issued_reports(assessment),
                blockers=[checklist.item(k) for k in card.blockers if checklist.item(k)])


@bp.get("/assessments/<int:assessment_id>/meeting")
@login_required
def meeting(assessment_id: int):
    """Launch review meeting mode: full screen, one slide per category, gaps first."""
    assessment = db.get_or_404(Assessment, assessment_id)
    return render_template("meeting/show.html", **meeting_context(assessment))


@bp.app_template_global()
def service_reports(service) -> list[Report]:
    """Every stored report of a service, newest first, for its page."""
    return reports.reports_of(service.id)

