"""Acceptance run for simultaneous first answers (issue 14, item 6), against real gunicorn.

    .venv/bin/python bench/first_answer_race.py [--postgres postgresql+psycopg://.../db]
                                                [--clients 8] [--items 15] [--workers 4]

For each database (a scratch SQLite file, and PostgreSQL when --postgres is given; its tables
are dropped and re-created), it makes a team of --clients people, a tier-2 service and a new
assessment, starts gunicorn with --workers sync workers, signs every person in over HTTP and
then has them all save the same unanswered item at the same moment (version 0, an htmx
POST), item after item. It prints, per database: requests, how many were saved (2xx),
refused as conflicts (409), other 4xx, 5xx, and lost writes: an item where more or fewer
than one save succeeded, or whose stored answer is not the one saved. Both must be 0.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "a long password for the race"
TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(env: dict, clients: int, items: int) -> tuple[int, list[str], list[str]]:
    """Fresh tables, people, a service and an assessment. Returns (assessment id, item keys,
    emails)."""
    os.environ.update(env)
    from sqlalchemy import text

    from webapp import accounts, assessments, catalog, create_app, registry
    from webapp.extensions import db

    app = create_app({"RATELIMIT_ENABLED": False})
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        db.create_all()
        owner = accounts.create_user("owner@example.test", "Owner", PASSWORD)
        team = registry.create_team("Race team", "", owner)
        emails = []
        for n in range(clients):
            person = accounts.create_user(f"person{n}@example.test", f"Person {n}", PASSWORD)
            emails.append(person.email)
        service = registry.register_service(team, {"name": "Race service", "tier": 2}, owner)
        catalog.sync(force=True)
        assessment = assessments.start_assessment(service, catalog.latest_version("production-readiness"), owner)
        keys = [item.key for item in assessments.checklist_for(assessment).items
                if item.applies_to(2)][:items]
        db.session.commit()
        _ensure_members(db, team.id, emails)
        result = assessment.id, keys, emails
        db.engine.dispose()
    return result


def _ensure_members(db, team_id: int, emails: list[str]) -> None:
    from sqlalchemy import select

    from webapp.models import Membership, User

    for user in db.session.scalars(select(User).where(User.email.in_(emails))):
        exists = db.session.scalar(select(Membership).where(Membership.team_id == team_id,
                                                            Membership.user_id == user.id))
        if exists is None:
            db.session.add(Membership(team_id=team_id, user_id=user.id, role="member"))
    db.session.commit()


class Person:
    """One browser: its own cookies, its own CSRF token."""

    def __init__(self, base: str, email: str):
        self.base, self.email = base, email
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.token = ""

    def request(self, path: str, data: dict | None = None, headers: dict | None = None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def sign_in(self, assessment_id: int) -> None:
        _, page = self.request("/login")
        status, _ = self.request("/login", {"email": self.email, "password": PASSWORD,
                                            "csrf_token": TOKEN.search(page).group(1)})
        assert status == 200, f"sign-in of {self.email} answered {status}"  # redirect followed
        _, page = self.request(f"/assessments/{assessment_id}")
        self.token = TOKEN.search(page).group(1)


def race(base: str, assessment_id: int, keys: list[str], emails: list[str]) -> dict:
    people = [Person(base, email) for email in emails]
    for person in people:
        person.sign_in(assessment_id)
    barrier = threading.Barrier(len(people))
    results: list[tuple[str, str, int, float]] = []  # (item, note, status, seconds)
    lock = threading.Lock()

    def answer_all(person: Person, index: int) -> None:
        for key in keys:
            note = f"{person.email} on {key}"
            barrier.wait()
            started = time.perf_counter()
            status, _ = person.request(
                f"/assessments/{assessment_id}/items/{key}/answer",
                {"status": ("met", "partial", "not_met")[index % 3], "note": note, "version": "0",
                 "csrf_token": person.token},
                {"HX-Request": "true"})
            with lock:
                results.append((key, note, status, time.perf_counter() - started))

    threads = [threading.Thread(target=answer_all, args=(p, n)) for n, p in enumerate(people)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"results": results}


def stored_notes(env: dict, assessment_id: int) -> dict[str, tuple[str, int]]:
    os.environ.update(env)
    from sqlalchemy import func, select

    from webapp import create_app
    from webapp.extensions import db
    from webapp.models import Answer, AnswerChange

    app = create_app({"RATELIMIT_ENABLED": False})
    with app.app_context():
        rows = db.session.execute(
            select(Answer.item_key, Answer.note, func.count(AnswerChange.id))
            .outerjoin(AnswerChange, AnswerChange.answer_id == Answer.id)
            .where(Answer.assessment_id == assessment_id).group_by(Answer.id)).all()
        db.engine.dispose()
    return {key: (note, changes) for key, note, changes in rows}


def run(label: str, database_url: str, args) -> bool:
    scratch = tempfile.mkdtemp(prefix="preflight-race-")
    env = {"DATABASE_URL": database_url, "SECRET_KEY": "race" * 10, "PREFLIGHT_INSTANCE_PATH": scratch}
    assessment_id, keys, emails = prepare(env, args.clients, args.items)
    port = free_port()
    pidfile = Path(scratch) / "gunicorn.pid"
    log = open(Path(scratch) / "gunicorn.log", "w")  # noqa: SIM115 - open while gunicorn runs
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "--no-control-socket", "-w", str(args.workers),
         "-b", f"127.0.0.1:{port}", "--pid", str(pidfile), "--timeout", "60", "webapp:create_app()"],
        cwd=REPO, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"gunicorn did not start; see {scratch}/gunicorn.log") from None
                time.sleep(0.2)
        started = time.perf_counter()
        results = race(f"http://127.0.0.1:{port}", assessment_id, keys, emails)["results"]
        elapsed = time.perf_counter() - started
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    stored = stored_notes(env, assessment_id)
    lost = 0
    for key in keys:
        saved = [note for k, note, status, _ in results if k == key and 200 <= status < 300]
        note, changes = stored.get(key, (None, 0))
        if len(saved) != 1 or note != saved[0] or changes != 1:
            lost += 1
    statuses = [status for _, _, status, _ in results]
    seconds = sorted(s for *_, s in results)
    fivexx = sum(1 for s in statuses if s >= 500)
    print(f"{label:<11} requests={len(statuses)} saved={sum(1 for s in statuses if 200 <= s < 300)} "
          f"conflicts_409={statuses.count(409)} other_4xx={sum(1 for s in statuses if 400 <= s < 500 and s != 409)} "
          f"5xx={fivexx} lost_writes={lost} p50={statistics.median(seconds) * 1000:.0f}ms "
          f"p95={seconds[int(len(seconds) * 0.95) - 1] * 1000:.0f}ms wall={elapsed:.1f}s")
    return fivexx == 0 and lost == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", help="a PostgreSQL URL whose tables may be dropped")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--items", type=int, default=15)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    print(f"{args.clients} clients x {args.items} items, all at version 0, gunicorn with {args.workers} sync workers")
    scratch = tempfile.mkdtemp(prefix="preflight-race-sqlite-")
    ok = run("SQLite", f"sqlite:///{scratch}/race.sqlite3", args)
    if args.postgres:
        ok = run("PostgreSQL", args.postgres, args) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
