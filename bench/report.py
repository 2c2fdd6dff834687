"""Time the signed PDF report: a 46-item tier-1 assessment with notes, evidence and the
category chart, rendered (WeasyPrint, PDF/A-3b with the snapshot attached) and signed
(pyHanko), cold (first in the process) and warm. Prints numbers; asserts nothing.

    .venv/bin/python bench/report.py [--runs 5] [--png /tmp/report]

Targets (docs/reports.md): warm render + sign under 1 s, the PDF under 1 MB. Wall time and
CPU time are both printed: on a shared, loaded machine CPU time is the better guide.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFLIGHT_INSTANCE_PATH", tempfile.mkdtemp(prefix="preflight-bench-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--png", default="/tmp/preflight-report", help="prefix for page PNGs")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also cProfile one warm render and print the N costliest functions")
    args = parser.parse_args()

    from sqlalchemy import select

    from webapp import create_app, reports, reviews
    from webapp.extensions import db
    from webapp.models import Report

    workdir = Path(tempfile.mkdtemp(prefix="preflight-bench-report-"))
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir / 'bench.sqlite3'}",
                      "SECRET_KEY": "bench-secret-key-0123456789", "RATELIMIT_ENABLED": False})
    with app.app_context(), app.test_request_context():
        db.create_all()
        from tests.signoff_helpers import Cast, answered_assessment

        cast = Cast(tier=1)
        assessment = answered_assessment(cast.service, cast.member, notes=True, evidence=True)
        statuses = ["met"] * 6 + ["partial", "not_met"]
        for index, answer in enumerate(sorted(assessment.answers, key=lambda a: a.item_key)):
            answer.status = statuses[index % len(statuses)]
        db.session.flush()
        from webapp import assessments

        assessments.refresh_score(assessment)
        assessments.submit_for_review(assessment, cast.member)
        reviews.decide(assessment, cast.owner, "owner", "approve", "Reviewed in the launch meeting.")
        reviews.decide(assessment, cast.sre, "sre", "approve_with_conditions", "Logging gaps.",
                       conditions=[reviews.ConditionInput("Ship JSON logs with request ids",
                                                          cast.member, date.today() + timedelta(days=30))])
        db.session.commit()
        items = len(assessment.answers)
        # Cold: the whole sign-off as the last approval runs it (snapshot, render, sign, store),
        # first in this process (fonts, stylesheets and pyHanko loaded on the way).
        start, cpu = time.perf_counter(), time.process_time()
        reviews.decide(assessment, cast.security, "security", "approve")
        cold_total, cold_cpu = time.perf_counter() - start, time.process_time() - cpu
        db.session.commit()
        stored = db.session.scalar(select(Report))
        body = stored.snapshot.encode()
        snapshot = json.loads(body)
        credential = reports.signing_credential()

        def once() -> tuple[float, float, bytes, float]:
            start, cpu = time.perf_counter(), time.process_time()
            pdf = reports.render_pdf(snapshot, body, report_id="PF-BENCH")
            rendered = time.perf_counter()
            signed = reports.sign_pdf(pdf, credential, reason="bench")
            return (rendered - start, time.perf_counter() - rendered, signed,
                    time.process_time() - cpu)

        warm = [once() for _ in range(args.runs)]
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(reports.render_pdf, snapshot, body, report_id="PF-BENCH")
            stats = pstats.Stats(profiler)
            stats.sort_stats("cumulative").print_stats(args.profile)
            stats.sort_stats("tottime").print_stats(args.profile)
        render_times = [w[0] for w in warm]
        sign_times = [w[1] for w in warm]
        totals = [w[0] + w[1] for w in warm]
        out = workdir / "report.pdf"
        out.write_bytes(stored.pdf)
        pages = subprocess.run(["pdfinfo", str(out)], capture_output=True, text=True).stdout
        page_count = next((line.split()[-1] for line in pages.splitlines() if line.startswith("Pages:")), "?")
        print(f"items answered: {items}, snapshot JSON: {len(body):,} bytes")
        print(f"cold (first sign-off in the process: snapshot + render + sign + store): "
              f"{cold_total:.3f} s wall, {cold_cpu:.3f} s CPU")
        print(f"warm ({args.runs} runs): render median {statistics.median(render_times):.3f} s, "
              f"sign median {statistics.median(sign_times):.3f} s, total median "
              f"{statistics.median(totals):.3f} s (min {min(totals):.3f}, max {max(totals):.3f}); "
              f"CPU median {statistics.median(w[3] for w in warm):.3f} s")
        print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
              "(CPU time is what an idle machine would wait)")
        print(f"PDF: {len(stored.pdf):,} bytes (stored report), {page_count} pages -> {out}")
        sig = subprocess.run(["pdfsig", str(out)], capture_output=True, text=True).stdout
        print("pdfsig:", "; ".join(line.strip("- ").strip() for line in sig.splitlines()
                                    if "Validation" in line or "document signed" in line))
        subprocess.run(["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "2", str(out), args.png], check=True)
        print(f"pages 1-2: {args.png}-01.png, {args.png}-02.png")


if __name__ == "__main__":
    main()
