"""Checklist files → ChecklistVersion rows. A bad file is refused; its last good version stays.

Each process re-reads the checklist directories when a file's size or mtime changed, so an
edited file is picked up without a restart; a file that fails validation is logged, shown on
the checklists page, and the version loaded before keeps serving.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import current_app
from sqlalchemy import func, select

from webapp.checklists import (
    Checklist,
    ChecklistInvalid,
    ChecklistProblem,
    discover,
    load_checklist,
)
from webapp.extensions import db
from webapp.models import ChecklistVersion, utcnow

log = logging.getLogger("webapp.checklists")

_seen_files: dict[str, tuple] = {}
_problems: list[ChecklistProblem] = []
# A refused file, by path: its fingerprint when refused and why. Until the file changes it is
# not parsed again, however often other files change or pages ask for a sync.
_refused: dict[str, tuple[tuple, list[ChecklistProblem]]] = {}


def checklist_dirs() -> list[str]:
    dirs = [current_app.config["CHECKLISTS_BUILTIN_DIR"]]
    if current_app.config.get("CHECKLISTS_DIR"):
        dirs.append(current_app.config["CHECKLISTS_DIR"])
    return dirs


def _fingerprint(paths: list[Path]) -> dict[str, tuple]:
    prints = {}
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        prints[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return prints


def sync(force: bool = False) -> list[ChecklistProblem]:
    """Load every checklist file; store new contents as versions. Flushes; caller commits."""
    global _seen_files, _problems
    paths = discover(checklist_dirs())
    prints = _fingerprint(paths)
    if not force and prints == _seen_files:
        return _problems
    problems: list[ChecklistProblem] = []
    slugs: dict[str, str] = {}
    for path in paths:
        refused = _refused.get(str(path))
        if refused is not None and refused[0] == prints.get(str(path)) and not force:
            problems.extend(refused[1])
            continue
        try:
            checklist = load_checklist(path)
        except ChecklistInvalid as exc:
            problems.extend(exc.problems)
            _refused[str(path)] = (prints.get(str(path)), exc.problems)
            log.warning("checklist %s refused, the last good version keeps serving:\n%s", path, exc)
            continue
        _refused.pop(str(path), None)
        if checklist.slug in slugs:
            problems.append(ChecklistProblem(str(path), None,
                            f"slug {checklist.slug!r} is also used by {slugs[checklist.slug]}; ignored"))
            continue
        slugs[checklist.slug] = str(path)
        _store(checklist)
    db.session.flush()
    _seen_files, _problems = prints, problems
    return problems


def _store(checklist: Checklist) -> ChecklistVersion:
    version = db.session.scalar(select(ChecklistVersion).where(
        ChecklistVersion.slug == checklist.slug, ChecklistVersion.content_hash == checklist.content_hash))
    if version is None:
        version = ChecklistVersion(slug=checklist.slug, version=checklist.version, title=checklist.title,
                                   content_hash=checklist.content_hash, content=checklist.to_json())
        db.session.add(version)
        log.info("checklist %s %s loaded (%s)", checklist.slug, checklist.version, checklist.content_hash[:12])
    elif version.id != _newest_id(checklist.slug):
        version.loaded_at = utcnow()  # a file reverted to an older content is current again
    return version


def _newest_id(slug: str) -> int | None:
    return db.session.scalar(select(ChecklistVersion.id).where(ChecklistVersion.slug == slug)
                             .order_by(ChecklistVersion.loaded_at.desc(), ChecklistVersion.id.desc()).limit(1))


def current_problems() -> list[ChecklistProblem]:
    return list(_problems)


def latest_versions() -> list[ChecklistVersion]:
    """The newest version of every checklist, by title."""
    newest = (select(ChecklistVersion.slug, func.max(ChecklistVersion.loaded_at).label("at"))
              .group_by(ChecklistVersion.slug).subquery())
    return list(db.session.scalars(
        select(ChecklistVersion).join(newest, (ChecklistVersion.slug == newest.c.slug)
                                      & (ChecklistVersion.loaded_at == newest.c.at))
        .order_by(ChecklistVersion.title)))


def latest_version(slug: str) -> ChecklistVersion | None:
    newest = _newest_id(slug)
    return db.session.get(ChecklistVersion, newest) if newest else None


_parsed: dict[str, Checklist] = {}  # by content hash: a version's content never changes


def checklist_of(version: ChecklistVersion) -> Checklist:
    """The parsed checklist a version pinned."""
    checklist = _parsed.get(version.content_hash)
    if checklist is None:
        checklist = _parsed[version.content_hash] = Checklist.from_json(version.content)
    return checklist
