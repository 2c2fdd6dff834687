"""Signed PDF reports: HTML → PDF/A-3b with WeasyPrint (fetching only the app's own static
files), the sign-off snapshot embedded as an attachment, a PAdES signature with pyHanko,
and verification of a PDF someone hands back. Flush, never commit."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import logging
import mimetypes
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

from flask import current_app, render_template
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from webapp import collector
from webapp.extensions import db
from webapp.models import Assessment, Report, SigningCredential, User, utcnow

log = logging.getLogger("webapp.reports")
# WeasyPrint logs every layout step at INFO: a line per page of every report in the app log.
logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)

SNAPSHOT_NAME = "preflight-snapshot.json"
SIGNATURE_FIELD = "PreflightSignature"
CREDENTIAL_NAME = "instance"
DRAFT_WATERMARK = "DRAFT — not signed off"


class ReportError(RuntimeError):
    """A report could not be made or read; the message is fit to show."""


# Rendering -----------------------------------------------------------------------------

def _static_fetcher():
    """A WeasyPrint URL fetcher that serves files from the app's static folder and refuses
    everything else: a report never fetches a URL from an answer, a note or evidence."""
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    root = Path(current_app.static_folder).resolve()

    class StaticOnly(URLFetcher):
        def fetch(self, url, headers=None):
            parts = urlsplit(url)
            if parts.scheme != "file":
                raise ValueError(f"reports fetch only the app's static files, not {url[:100]}")
            path = Path(unquote(parts.path)).resolve()
            if not path.is_relative_to(root) or not path.is_file():
                raise ValueError(f"not a static file of the app: {url[:100]}")
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return URLFetcherResponse(url, path.read_bytes(), {"Content-Type": kind})

    return StaticOnly(allowed_protocols=("file",), allow_redirects=False)


@functools.cache
def _stylesheet(path: Path, mtime_ns: int):
    """report.css parsed once per process (per file version): a parsed stylesheet is only
    read while rendering. It fetches nothing (no url() in it)."""
    from weasyprint import CSS

    return CSS(string=path.read_text(encoding="utf-8"), base_url=path.as_uri())


def _report_stylesheet():
    path = Path(current_app.static_folder).resolve() / "css" / "report.css"
    return _stylesheet(path, path.stat().st_mtime_ns)


_fonts = threading.local()


def _font_config():
    """One WeasyPrint FontConfiguration per thread, kept: a fresh one is a new Pango font
    map whose font matching and glyph caches start cold on every report. Per thread because
    a Pango font map is not thread-safe; the report has no @font-face, so nothing in it
    depends on the document."""
    config = getattr(_fonts, "config", None)
    if config is None:
        from weasyprint.text.fonts import FontConfiguration

        config = _fonts.config = FontConfiguration()
    return config


STATUS_ORDER = {"not_met": 0, "partial": 1, None: 2, "met": 3, "n_a": 4}


def report_model(snapshot: dict) -> dict:
    """What the report template shows, derived from the snapshot only: the PDF can say
    nothing the snapshot does not."""
    from webapp import charts

    items = snapshot["items"]
    scores = snapshot["score"]["categories"]
    categories = []
    seen = []
    for item in items:
        if item["category"] not in seen:
            seen.append(item["category"])
    for key in seen:
        info = scores.get(key, {"title": key, "score": None, "answered": 0, "applicable": 0})
        categories.append({"key": key, **info,
                           "items": [i for i in items if i["category"] == key]})
    for item in items:
        item["live_waiver"] = next((w for w in item["waivers"] if w["state"] == "approved"), None)
    applicable = [i for i in items if i["applies"]]
    gaps = sorted((i for i in applicable if i["status"] in ("not_met", "partial")
                   or i["live_waiver"] or i["probe_overridden"]),
                  key=lambda i: (not i["critical"], STATUS_ORDER.get(i["status"], 2), -i["weight"]))
    chart = charts.category_bars([(c["title"], c["score"]) for c in categories if c["applicable"]],
                                 title="Score by category")
    counts = {status: sum(1 for i in applicable if i["status"] == status)
              for status in ("met", "partial", "not_met", "n_a")}
    return {**snapshot, "categories": categories, "gaps": gaps, "chart": chart, "counts": counts,
            "open_conditions": [c for c in snapshot["conditions"] if not c["done_at"]],
            "blocker_titles": [i["title"] for i in items if i["key"] in snapshot["score"]["blockers"]]}


def render_pdf(snapshot: dict, snapshot_json: bytes | None, *, report_id: str,
               draft: bool = False) -> bytes:
    """The report as PDF/A-3b bytes, unsigned. `snapshot_json` is embedded when given."""
    from weasyprint import HTML, Attachment

    model = report_model(snapshot)
    html = render_template("reports/report.html", r=model, report_id=report_id, draft=draft,
                           watermark=DRAFT_WATERMARK,
                           snapshot_sha256=hashlib.sha256(snapshot_json).hexdigest()
                           if snapshot_json is not None else None)
    root = Path(current_app.static_folder).resolve()
    fetcher = _static_fetcher()
    attachments = []
    if snapshot_json is not None:
        attachments.append(Attachment(
            file_obj=io.BytesIO(snapshot_json), url_fetcher=fetcher, name=SNAPSHOT_NAME,
            description="The sign-off snapshot this report shows (canonical JSON)",
            relationship="Source"))
    with collector.paused():  # parsing the HTML allocates as much as laying it out
        document = HTML(string=html, base_url=root.as_uri() + "/", url_fetcher=fetcher)
        return document.write_pdf(pdf_variant="pdf/a-3b", attachments=attachments,
                                  custom_metadata=True, stylesheets=[_report_stylesheet()],
                                  font_config=_font_config())


# Signing credentials -------------------------------------------------------------------

@dataclass
class Credential:
    certificate_pem: bytes
    key_pem: bytes  # unencrypted, in memory only
    source: str  # "configured" | "instance"

    @property
    def fingerprint(self) -> str:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(self.certificate_pem)
        return cert.fingerprint(_sha256()).hex()


def _sha256():
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def _key_password() -> bytes:
    return hashlib.sha256(b"preflight-report-key:" + current_app.config["SECRET_KEY"].encode()).digest()


def _make_self_signed() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    # ECDSA P-256: made in milliseconds, small signatures, checked by Poppler and Acrobat.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Preflight report signing"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Preflight instance")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, _sha256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _encrypt_key(key_pem: bytes) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(_key_password())).decode()


def _decrypt_key(stored: str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(stored.encode(), password=_key_password())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def signing_credential() -> Credential:
    """REPORT_SIGNING_CERT/KEY (PEM files) when configured; else the instance's own
    self-signed certificate, made once and kept in the database (its key encrypted with
    SECRET_KEY) so every process and host signs with the same one."""
    cert_path = current_app.config.get("REPORT_SIGNING_CERT")
    key_path = current_app.config.get("REPORT_SIGNING_KEY")
    if cert_path and key_path:
        try:
            return Credential(Path(cert_path).read_bytes(), Path(key_path).read_bytes(), "configured")
        except OSError as exc:
            raise ReportError(f"cannot read the report signing certificate or key: {exc}") from None
    row = db.session.scalar(select(SigningCredential).where(SigningCredential.name == CREDENTIAL_NAME))
    if row is None:
        cert_pem, key_pem = _make_self_signed()
        credential = Credential(cert_pem, key_pem, "instance")
        row = SigningCredential(name=CREDENTIAL_NAME, certificate_pem=cert_pem.decode(),
                                key_pem=_encrypt_key(key_pem), fingerprint=credential.fingerprint)
        try:
            with db.session.begin_nested():  # another process may have made one meanwhile
                db.session.add(row)
        except IntegrityError:
            row = db.session.scalar(select(SigningCredential)
                                    .where(SigningCredential.name == CREDENTIAL_NAME))
        else:
            log.info("made the instance's report signing certificate %s", row.fingerprint[:16])
            return credential
    try:
        return Credential(row.certificate_pem.encode(), _decrypt_key(row.key_pem), "instance")
    except (ValueError, TypeError):
        raise ReportError("The stored report signing key cannot be decrypted: SECRET_KEY changed. "
                          "Restore the old SECRET_KEY or configure REPORT_SIGNING_CERT/KEY.") from None


def trusted_certificates() -> list[bytes]:
    """Certificates whose signatures count as this instance's: configured and stored."""
    certs = [row.certificate_pem.encode() for row in db.session.scalars(select(SigningCredential))]
    cert_path = current_app.config.get("REPORT_SIGNING_CERT")
    if cert_path and Path(cert_path).is_file():
        certs.append(Path(cert_path).read_bytes())
    return certs


def sign_pdf(pdf: bytes, credential: Credential, *, reason: str) -> bytes:
    """A PAdES (ETSI.CAdES.detached) signature over the whole file."""
    from pyhanko.keys import load_cert_from_pemder, load_private_key_from_pemder_data
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    cert = _load_cert(credential.certificate_pem, load_cert_from_pemder)
    signer = signers.SimpleSigner(
        signing_cert=cert, signing_key=load_private_key_from_pemder_data(credential.key_pem, None),
        cert_registry=SimpleCertificateStore.from_certs([cert]))
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    meta = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD, md_algorithm="sha256", reason=reason,
        subfilter=fields.SigSeedSubFilter.PADES, name="Preflight")
    output = _run_async(lambda: signers.async_sign_pdf(
        writer, meta, signer=signer, bytes_reserved=_signature_space(cert)))
    return output.getvalue()


def _signature_space(cert) -> int:
    """Room for the signature container, in hex digits. Without it pyHanko signs twice: a
    dry run to measure the container, then the real one (half the signing time). The
    container holds the certificate (the only one in the registry), the signed attributes
    and the signature value; with no timestamp or revocation data the rest stays well under
    4 KB even for RSA-4096, so this reserves the certificate plus 4 KB."""
    return 2 * (len(cert.dump()) + 4096)


def _run_async(make_coroutine):
    """pyHanko is async inside; its sync wrappers call asyncio.run, which fails in a thread
    that already runs a loop (an async worker, Playwright). Run it on a fresh thread then."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()


def _load_cert(pem: bytes, loader):
    import tempfile

    # pyHanko's loader reads a file; asn1crypto parses DER, so go through a temp file.
    with tempfile.NamedTemporaryFile(suffix=".pem") as handle:
        handle.write(pem)
        handle.flush()
        return loader(handle.name)


# Issuing and exporting -----------------------------------------------------------------

def report_code(assessment_id: int, when: datetime) -> str:
    return f"PF-{assessment_id}-{when:%Y%m%d%H%M%S}"


def issue(assessment: Assessment, snapshot_json: bytes, actor: User | None, *,
          at: datetime | None = None) -> Report:
    """Render, sign and store the report of a signed-off assessment (dated `at`, default now:
    demo data dates its reports at their sign-off)."""
    snapshot = json.loads(snapshot_json)
    now = at or utcnow()
    code = report_code(assessment.id, now)
    pdf = render_pdf(snapshot, snapshot_json, report_id=code)
    signed = sign_pdf(pdf, signing_credential(),
                      reason=f"Preflight sign-off of assessment {assessment.id} ({code})")
    report = Report(assessment_id=assessment.id, pdf=signed, sha256=hashlib.sha256(signed).hexdigest(),
                    snapshot=snapshot_json.decode("utf-8"),
                    snapshot_sha256=hashlib.sha256(snapshot_json).hexdigest(),
                    created_by_id=actor.id if actor else None, created_at=now)
    db.session.add(report)
    db.session.flush()
    return report


def draft_pdf(assessment: Assessment) -> bytes:
    """An unsigned export of an assessment as it stands, watermarked, with no snapshot
    attached: it can never pass verification as a report."""
    from webapp import reviews

    snapshot = reviews.snapshot(assessment)
    return render_pdf(snapshot, None, report_id=f"DRAFT-{assessment.id}-{utcnow():%Y%m%d%H%M%S}",
                      draft=True)


def reports_of(service_id: int) -> list[Report]:
    return list(db.session.scalars(
        select(Report).join(Assessment).where(Assessment.service_id == service_id)
        .order_by(Report.created_at.desc())))


# Verification --------------------------------------------------------------------------

@dataclass
class Verification:
    genuine: bool
    reasons: list[str] = field(default_factory=list)
    report: Report | None = None
    signed_by: str | None = None
    signed_at: datetime | None = None
    signature: str | None = None  # what the signature check found

    @property
    def summary(self) -> str:
        return "genuine" if self.genuine else "not genuine"


def verify_sha256(digest: str) -> Verification:
    digest = (digest or "").strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        return Verification(False, ["That is not a SHA-256 (64 hexadecimal characters)."])
    report = db.session.scalar(select(Report).where(Report.sha256 == digest))
    if report is None:
        return Verification(False, ["No report of this instance has that SHA-256."])
    return Verification(True, ["The SHA-256 matches a stored report."], report=report)


def check_signature(data: bytes) -> tuple[bool, str, str | None, datetime | None]:
    """(ok, what was found, signer, signing time) for the PDF's Preflight signature."""
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import async_validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        signatures = reader.embedded_signatures
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a report"
        return False, f"not a readable PDF ({type(exc).__name__})", None, None
    if not signatures:
        return False, "the PDF carries no signature", None, None
    from pyhanko.keys import load_cert_from_pemder

    roots = [_load_cert(pem, load_cert_from_pemder) for pem in trusted_certificates()]
    try:
        context = ValidationContext(trust_roots=roots)
        status = _run_async(lambda: async_validate_pdf_signature(signatures[-1], context))
    except Exception as exc:  # noqa: BLE001 - a damaged signature must read as invalid
        return False, f"the signature cannot be validated ({type(exc).__name__})", None, None
    signer = status.signing_cert.subject.human_friendly if status.signing_cert else None
    when = status.signer_reported_dt
    if not status.intact or not status.valid:
        return False, "the signature does not match the document (altered)", signer, when
    if status.coverage is None or status.coverage.name != "ENTIRE_FILE":
        return False, "the signature does not cover the whole file (content was added)", signer, when
    if not status.trusted:
        return False, "signed by a certificate this instance does not use", signer, when
    return True, "signature valid, whole file covered, signed by this instance", signer, when


def verify_pdf(data: bytes) -> Verification:
    """Is this byte string a genuine report of this instance? Every reason is kept."""
    digest = hashlib.sha256(data).hexdigest()
    report = db.session.scalar(select(Report).where(Report.sha256 == digest))
    ok, found, signer, when = check_signature(data)
    reasons = [f"Signature: {found}."]
    if report is None:
        reasons.append("No stored report has this file's SHA-256 "
                       f"({digest[:16]}…): it is not a report of this instance, or it was changed.")
    else:
        reasons.append(f"The file is byte for byte report {report.id} as stored.")
    return Verification(ok and report is not None, reasons, report=report, signed_by=signer,
                        signed_at=when, signature=found)


def embedded_snapshot(data: bytes) -> bytes | None:
    """The snapshot JSON attached to a report PDF, or None."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    reader = PdfFileReader(io.BytesIO(data), strict=False)
    root = reader.root
    if "/Names" not in root or "/EmbeddedFiles" not in root["/Names"]:
        return None

    def walk(node):
        if "/Names" in node:
            pairs = node["/Names"]
            for i in range(0, len(pairs), 2):
                yield pairs[i + 1].get_object()
        for kid in node.get("/Kids", ()):
            yield from walk(kid.get_object())

    for spec in walk(root["/Names"]["/EmbeddedFiles"]):
        name = str(spec["/UF"] if "/UF" in spec else spec["/F"])
        if name == SNAPSHOT_NAME:
            return spec["/EF"]["/F"].data
    return None
