"""The signed PDF report: content (pdftotext), the embedded snapshot, the PAdES signature
(pdfsig and our own check), a flipped byte, downloads, draft exports, the verification page,
the CLI, and a url_fetcher that never leaves the app's static files."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import shutil
import subprocess
import threading
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from tests.factories import UserFactory
from tests.signoff_helpers import Cast, answered_assessment
from webapp import assessments, reports, reviews
from webapp.extensions import db
from webapp.models import Answer, Report, SigningCredential

POPPLER = shutil.which("pdfsig") and shutil.which("pdftotext")
needs_poppler = pytest.mark.skipif(not POPPLER, reason="poppler-utils (pdfsig, pdftotext) not installed")


@pytest.fixture
def signed(app):
    """A tier-2 assessment with notes, evidence, one not-met item under a waiver, signed
    off by owner and SRE: (cast, assessment, report)."""
    cast = Cast(tier=2)
    assessment = answered_assessment(cast.service, cast.member, notes=True, evidence=True)
    answer = assessments.answer_for(assessment, "structured_logging")
    answer.status, answer.note = "not_met", "Logs are **plain text** for now. <script>alert(1)</script>"
    assessments.refresh_score(assessment)
    assessments.submit_for_review(assessment, cast.member)
    reviews.decide(assessment, cast.owner, "owner", "approve", "Good to go.")
    reviews.decide(assessment, cast.sre, "sre", "approve")
    db.session.commit()
    report = db.session.scalar(select(Report))
    return cast, assessment, report


def _text(pdf: bytes, tmp_path) -> str:
    path = tmp_path / "r.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True)
    return re.sub(r"\s+", " ", out.stdout)


def _pdfsig(pdf: bytes, tmp_path) -> str:
    path = tmp_path / "sig.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdfsig", str(path)], capture_output=True, text=True).stdout


@needs_poppler
def test_report_shows_every_item_the_verdict_and_the_signers(signed, tmp_path):
    _, assessment, report = signed
    text = _text(report.pdf, tmp_path)
    for item in assessments.checklist_for(assessment).items:
        assert re.sub(r"\s+", " ", item.title) in text, item.title
    assert "Ready with conditions" in text or "Ready" in text
    card = assessments.scorecard(assessment)
    assert card.verdict_label in text and f"{card.score:g}/100" in text.replace(" /100", "/100")
    for name in ("Olive Owner", "Sam SRE", "Good to go."):
        assert name in text
    assert "Gaps and risks" in text and "Page 1 of" in text
    assert f"{report.snapshot_sha256}" in text.replace(" ", "") or report.snapshot_sha256[:32] in text.replace(" ", "")
    assert "<script>" in text  # a note's HTML is shown as text, never interpreted


def test_embedded_snapshot_equals_the_stored_one_and_hashes_match(signed):
    _, _, report = signed
    assert hashlib.sha256(report.pdf).hexdigest() == report.sha256
    assert reports.embedded_snapshot(report.pdf) == report.snapshot.encode("utf-8")
    assert hashlib.sha256(report.snapshot.encode()).hexdigest() == report.snapshot_sha256


@needs_poppler
def test_pdfsig_says_valid_and_a_flipped_byte_fails_pdfsig_and_verify(signed, tmp_path, runner):
    _, _, report = signed
    out = _pdfsig(report.pdf, tmp_path)
    assert "Signature is Valid." in out and "Total document signed" in out
    assert "ETSI.CAdES.detached" in out

    path = tmp_path / "good.pdf"
    path.write_bytes(report.pdf)
    result = runner.invoke(args=["reports", "verify", str(path)])
    assert result.exit_code == 0, result.output
    assert f"genuine: report {report.id}, assessment {report.assessment_id}" in result.output

    tampered = bytearray(report.pdf)
    # A byte inside the signed content (the page content streams), not in the signature itself.
    position = report.pdf.index(b"stream", len(report.pdf) // 4) + 20
    tampered[position] ^= 0x01
    assert "Signature is Valid." not in _pdfsig(bytes(tampered), tmp_path)
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(bytes(tampered))
    result = runner.invoke(args=["reports", "verify", str(bad)])
    assert result.exit_code == 1
    assert "NOT genuine" in result.output and "altered" in result.output


def test_the_signing_certificate_is_made_once_and_kept_in_the_database(signed):
    cast, _, _ = signed
    second = answered_assessment(cast.service, cast.member)
    assessments.submit_for_review(second, cast.member)
    reviews.decide(second, cast.owner, "owner", "approve")
    reviews.decide(second, cast.sre, "sre", "approve")
    db.session.commit()
    assert db.session.scalar(select(func.count(SigningCredential.id))) == 1
    row = db.session.scalar(select(SigningCredential))
    assert "ENCRYPTED PRIVATE KEY" in row.key_pem  # never stored in the clear
    reports_ = db.session.scalars(select(Report).order_by(Report.id)).all()
    assert all(reports.verify_pdf(r.pdf).genuine for r in reports_)


def test_downloads_return_the_stored_bytes(signed, client, auth):
    cast, assessment, report = signed
    auth.login(cast.outsider)  # anyone signed in may read
    response = client.get(f"/reports/{report.id}.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.data == report.pdf
    assert client.get(f"/assessments/{assessment.id}/export.pdf").data == report.pdf
    page = client.get(f"/services/{cast.service.id}").get_data(as_text=True)
    assert f"/reports/{report.id}.pdf" in page and report.sha256[:16] in page


@needs_poppler
def test_a_draft_export_is_watermarked_unsigned_and_never_verifies(app, client, auth, tmp_path):
    cast = Cast(tier=2)
    assessment = answered_assessment(cast.service, cast.member, skip=("structured_logging",))
    db.session.commit()
    auth.login(cast.member)
    response = client.get(f"/assessments/{assessment.id}/export.pdf")
    assert response.status_code == 200
    assert "DRAFT" in response.headers["Content-Disposition"]
    text = _text(response.data, tmp_path)
    assert "DRAFT — not signed off" in text
    assert reports.embedded_snapshot(response.data) is None
    assert "Signature Field Name" not in _pdfsig(response.data, tmp_path)
    result = reports.verify_pdf(response.data)
    assert not result.genuine and "the PDF carries no signature" in result.reasons[0]
    assert db.session.scalar(select(func.count(Report.id))) == 0  # GET wrote nothing


def test_verification_page_by_upload_and_by_hash(signed, client, auth):
    cast, _, report = signed
    auth.login(cast.outsider)
    page = client.post("/reports/verify", data={"pdf": (io.BytesIO(report.pdf), "r.pdf")},
                       content_type="multipart/form-data").get_data(as_text=True)
    assert "✔ Genuine" in page and f"report {report.id} of" in page and "sre Sam SRE" in page
    page = client.post("/reports/verify", data={"sha256": report.sha256.upper()}).get_data(as_text=True)
    assert "✔ Genuine" in page
    forged = bytearray(report.pdf)
    forged[report.pdf.index(b"stream", len(forged) // 3) + 30] ^= 0x20
    forged = bytes(forged)
    response = client.post("/reports/verify", data={"pdf": (io.BytesIO(forged), "f.pdf")},
                           content_type="multipart/form-data")
    assert "✖ Not genuine" in response.get_data(as_text=True)
    response = client.post("/reports/verify", data={"sha256": "not-a-hash"})
    assert "not a SHA-256" in response.get_data(as_text=True)
    assert client.post("/reports/verify", data={}).status_code == 400


def test_cli_lists_and_exports_reports(signed, runner, tmp_path):
    cast, assessment, report = signed
    result = runner.invoke(args=["reports", "list"])
    assert result.exit_code == 0
    assert result.output.startswith(f"{report.id}\t{cast.service.slug}\t{assessment.id}\t{report.sha256}\t")
    out = tmp_path / "export.pdf"
    result = runner.invoke(args=["reports", "export", str(report.id), "-o", str(out)])
    assert result.exit_code == 0 and out.read_bytes() == report.pdf
    assert runner.invoke(args=["reports", "export", "999", "-o", str(out)]).exit_code == 1
    not_pdf = tmp_path / "x.pdf"
    not_pdf.write_bytes(b"hello")
    result = runner.invoke(args=["reports", "verify", str(not_pdf)])
    assert result.exit_code == 1 and "NOT genuine" in result.output


def test_the_url_fetcher_serves_only_static_files(app, tmp_path):
    """A note with an image and an evidence link to a live server: rendering fetches nothing."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        cast = Cast(tier=3)
        assessment = answered_assessment(cast.service, cast.member, evidence=True)
        answer = db.session.scalar(select(Answer).where(Answer.assessment_id == assessment.id).limit(1))
        answer.note = f"![diagram]({url}/diagram.png) and [the doc]({url}/doc)"
        answer.evidence[0].url = f"{url}/evidence"
        db.session.flush()
        with app.test_request_context():
            pdf = reports.draft_pdf(assessment)
            fetcher = reports._static_fetcher()
            assert fetcher.fetch(f"{app.static_folder}/css/report.css".replace("/", "/", 1).join(["file://", ""])).status == 200
            for refused in (f"{url}/x.css", "file:///etc/passwd", f"file://{app.static_folder}/../README.md"):
                with pytest.raises(ValueError):
                    fetcher.fetch(refused)
    finally:
        server.shutdown()
        thread.join(timeout=5)
    assert pdf.startswith(b"%PDF") and hits == []


def test_the_api_verifies_a_real_signed_report(client, signed):
    """The same verification as the page and the CLI, through the API with a token."""
    from webapp import tokens

    cast, _, report = signed
    pdf = report.pdf
    _, secret = tokens.create_token(cast.member, "verify", ["read"], 1)
    db.session.commit()
    headers = {"Authorization": f"Bearer {secret}"}
    body = client.post("/api/v1/reports/verify", data=pdf, content_type="application/pdf", headers=headers).get_json()
    assert body["match"] is True and body["signature_checked"] is True and body["report"]["id"] == report.id
    flipped = bytearray(pdf)
    flipped[len(flipped) // 2] ^= 0x01
    body = client.post("/api/v1/reports/verify", data=bytes(flipped), content_type="application/pdf",
                       headers=headers).get_json()
    assert body["match"] is False
    for junk in (b"", b"hello, not a pdf"):  # nothing to check: said so, not "checked"
        response = client.post("/api/v1/reports/verify", data=junk, content_type="application/pdf", headers=headers)
        assert response.status_code == 422 and "not a PDF" in response.get_json()["detail"]


def test_demo_seed_stores_signed_reports_for_the_latest_sign_offs(app):
    """`flask demo seed` leaves signed-off assessments with their stored, genuine reports."""
    from webapp import demo
    from webapp.models import Assessment

    counts = demo.seed(services=12, assessments_per_service=10, reports=2)
    db.session.commit()
    stored = list(db.session.scalars(select(Report).order_by(Report.id)))
    assert counts["report"] == len(stored) == 2
    for report in stored:
        assessment = db.session.get(Assessment, report.assessment_id)
        assert assessment.state == "signed_off" and report.created_at == assessment.decided_at
        assert reports.verify_pdf(report.pdf).genuine
        assert reports.embedded_snapshot(report.pdf) == report.snapshot.encode("utf-8")
    assert len({db.session.get(Assessment, r.assessment_id).service_id for r in stored}) == 2


def test_print_markdown_writes_list_markers_as_text():
    from webapp.presentation import render_print_markdown

    html = str(render_print_markdown(
        "- a **b**\n- c\n\n3. x\n4. y\n\n* loose\n\n* items\n  - nested\n    - deeper\n\n"
        "- ```\n  code\n  ```\n- <script>x</script>"))
    assert '<li class="marked">•\u00a0a <strong>b</strong></li>' in html
    assert '<ol start="3">\n<li class="marked">3.\u00a0x</li>\n<li class="marked">4.\u00a0y</li>' in html
    assert "<p>•\u00a0loose</p>" in html and "◦\u00a0nested" in html and "▪\u00a0deeper" in html
    # An item that starts with a block other than a paragraph keeps the CSS marker.
    assert "<li>\n<pre><code>code" in html
    assert "•\u00a0&lt;script&gt;x&lt;/script&gt;" in html


@needs_poppler
def test_note_lists_show_one_marker_per_item(signed, tmp_path):
    _, _, report = signed
    text = _text(report.pdf, tmp_path)
    assert "• owner: platform team" in text
    assert "• •" not in text


@needs_poppler
def test_a_configured_rsa_4096_certificate_fits_the_reserved_signature_space(app, tmp_path):
    """The signature space is reserved from the certificate's size (no dry run): a big
    configured certificate and key must still fit, and the signature stay valid."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    from weasyprint import HTML

    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Report signing " + "x" * 45),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "An organisation " + "y" * 45)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"host{i}.example.test")
                                                        for i in range(20)]), critical=False)
            .sign(key, hashes.SHA256()))
    credential = reports.Credential(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()), "configured")
    signed = reports.sign_pdf(HTML(string="<p>Report</p>").write_pdf(), credential, reason="test")
    out = _pdfsig(signed, tmp_path)
    assert "Signature is Valid." in out and "Total document signed" in out


@needs_poppler
def test_an_external_runbook_is_a_link_in_the_report(app, tmp_path):
    cast = Cast(tier=3)
    cast.service.runbook_url = "https://wiki.example.test/runbooks/ledger"
    assessment = answered_assessment(cast.service, cast.member)
    snapshot = reviews.snapshot(assessment)
    assert snapshot["service"]["runbook_url"] == "https://wiki.example.test/runbooks/ledger"
    path = tmp_path / "draft.pdf"
    path.write_bytes(reports.render_pdf(snapshot, None, report_id="PF-TEST", draft=True))
    links = subprocess.run(["pdfinfo", "-url", str(path)], capture_output=True, text=True).stdout
    assert "https://wiki.example.test/runbooks/ledger" in links
    assert "Runbook https://wiki.example.test/runbooks/ledger" in _text(path.read_bytes(), tmp_path)


@needs_poppler
def test_a_probe_written_note_is_plain_text_in_the_report_never_a_link(app, tmp_path):
    cast = Cast(tier=3)
    assessment = answered_assessment(cast.service, cast.member)
    answer = assessments.answer_for(assessment, "structured_logging")
    answer.source, answer.note = "probe", "health said [click me](https://attacker.example.test/x) **now**"
    snapshot = reviews.snapshot(assessment)
    path = tmp_path / "draft.pdf"
    path.write_bytes(reports.render_pdf(snapshot, None, report_id="PF-TEST", draft=True))
    links = subprocess.run(["pdfinfo", "-url", str(path)], capture_output=True, text=True).stdout
    assert "attacker.example.test" not in links
    assert "[click me](https://attacker.example.test/x) **now**" in _text(path.read_bytes(), tmp_path)


@needs_poppler
def test_a_waivers_reason_and_control_print_as_markdown_as_on_the_web(app, tmp_path):
    cast = Cast(tier=3)
    assessment = answered_assessment(cast.service, cast.member)
    assessments.record_answer(assessment, "structured_logging", "not_met", "", cast.member,
                              expected_version=assessments.answer_for(assessment, "structured_logging").version)
    waiver = assessments.request_waiver(
        assessment, "structured_logging", "See the [capacity plan](https://wiki.example.test/capacity) **first**.",
        "- alert at 60% CPU\n- weekly review", cast.owner, date.today() + timedelta(days=30), cast.member)
    assessments.decide_waiver(waiver, True, UserFactory(is_reviewer=True))
    snapshot = reviews.snapshot(assessment)
    path = tmp_path / "draft.pdf"
    path.write_bytes(reports.render_pdf(snapshot, None, report_id="PF-TEST", draft=True))
    text = _text(path.read_bytes(), tmp_path)
    assert "See the capacity plan first." in text and "[capacity plan]" not in text
    assert "Compensating control • alert at 60% CPU • weekly review" in text
    links = subprocess.run(["pdfinfo", "-url", str(path)], capture_output=True, text=True).stdout
    assert "https://wiki.example.test/capacity" in links


def test_the_collector_pause_is_counted_across_threads_and_keeps_a_collector_someone_disabled():
    import gc
    import threading

    from webapp import collector

    assert gc.isenabled()
    inside, release = threading.Event(), threading.Event()

    def render_in_a_thread():
        with collector.paused():
            inside.set()
            release.wait(5)

    other = threading.Thread(target=render_in_a_thread)
    other.start()
    inside.wait(5)
    with collector.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other render is still going
    release.set()
    other.join(5)
    assert gc.isenabled()
    gc.disable()  # someone else's choice
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
