"""Checklist files → ChecklistVersion rows. A bad file is refused; its last good version stays.

The database is the only truth: what is loaded (`ChecklistVersion`) and what was refused
(`ChecklistRefusal`) are rows every process and host reads alike. `sync()` runs at start-up
(`flask checklists sync`), from the worker every minute and from the admin's "Reload" button,
never as a side effect of reading a page. Concurrent syncs are safe: rows are inserted with
ON CONFLICT DO NOTHING and re-read, and nothing is written when no file changed.
"""

from __future__ import annotations

import hashlib
import logging

from flask import current_app
from sqlalchemy import case, delete, func, null, select, type_coerce
from sqlalchemy.dialects import postgresql, sqlite

from webapp.checklists import (
    Checklist,
    ChecklistInvalid,
    ChecklistProblem,
    discover,
    parse_checklist,
)
from webapp.extensions import db
from webapp.models import ChecklistRefusal, ChecklistVersion, utcnow

log = logging.getLogger("webapp.checklists")

# Process-local caches of pure functions of immutable inputs (a file's bytes, a version's
# content), so they can never disagree with the database or with another process.
_loaded: dict[tuple[str, str], Checklist | ChecklistInvalid] = {}  # by (path, sha256 of bytes)
_parsed: dict[str, Checklist] = {}  # by content hash: a version's content never changes


def checklist_dirs() -> list[str]:
    dirs = [current_app.config["CHECKLISTS_BUILTIN_DIR"]]
    if current_app.config.get("CHECKLISTS_DIR"):
        dirs.append(current_app.config["CHECKLISTS_DIR"])
    return dirs


def sync(force: bool = False) -> list[ChecklistProblem]:
    """Load every checklist file: store new contents as versions, record refused files.
    Returns the problems found. Writes only what changed; flushes, the caller commits.
    `force` re-parses every file instead of trusting this process's parse cache."""
    refused: dict[str, tuple[str, list[ChecklistProblem]]] = {}
    slugs: dict[str, str] = {}
    for path in discover(checklist_dirs()):
        name = str(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            refused[name] = ("", [ChecklistProblem(name, None, f"cannot read file: {exc.strerror or exc}")])
            continue
        digest = hashlib.sha256(raw).hexdigest()
        loaded = _load(name, raw, digest, force)
        if isinstance(loaded, ChecklistInvalid):
            refused[name] = (digest, loaded.problems)
        elif loaded.slug in slugs:
            refused[name] = (digest, [ChecklistProblem(
                name, None, f"slug {loaded.slug!r} is also used by {slugs[loaded.slug]}; ignored")])
        else:
            slugs[loaded.slug] = name
            _store(loaded)
    _record_refusals(refused)
    db.session.flush()
    return [problem for _, problems in refused.values() for problem in problems]


def _load(name: str, raw: bytes, digest: str, force: bool) -> Checklist | ChecklistInvalid:
    key = (name, digest)
    if force or key not in _loaded:
        try:
            _loaded[key] = parse_checklist(raw, name)
        except ChecklistInvalid as exc:
            _loaded[key] = exc.with_traceback(None)  # keep the problems, not the parser's frames
    return _loaded[key]


def _insert(model):
    """INSERT ... ON CONFLICT for this session's database (PostgreSQL or SQLite)."""
    dialect = db.session.get_bind().dialect.name
    return (postgresql if dialect == "postgresql" else sqlite).insert(model)


def _store(checklist: Checklist) -> ChecklistVersion:
    """Make this content the current version of its slug. Another process may be storing the
    same content at the same moment: the insert then does nothing, and both read one row."""
    version = _version(checklist.slug, checklist.content_hash)
    if version is None:
        inserted = db.session.execute(_insert(ChecklistVersion).values(
            slug=checklist.slug, version=checklist.version, title=checklist.title,
            content_hash=checklist.content_hash, content=checklist.to_json(), loaded_at=utcnow(),
        ).on_conflict_do_nothing(index_elements=["slug", "content_hash"]))
        if inserted.rowcount:
            db.session.info.pop("checklists_by_version", None)
            log.info("checklist %s %s loaded (%s)", checklist.slug, checklist.version,
                     checklist.content_hash[:12])
        version = _version(checklist.slug, checklist.content_hash)
    elif version.id != _newest_id(checklist.slug):
        version.loaded_at = utcnow()  # a file reverted to an older content is current again
        log.info("checklist %s %s is current again (%s)", checklist.slug, checklist.version,
                 checklist.content_hash[:12])
    return version


def _version(slug: str, content_hash: str) -> ChecklistVersion | None:
    return db.session.scalar(select(ChecklistVersion).where(
        ChecklistVersion.slug == slug, ChecklistVersion.content_hash == content_hash))


def _record_refusals(refused: dict[str, tuple[str, list[ChecklistProblem]]]) -> None:
    """Make the refusal rows match this sync: one per refused file, none for files that load
    or are gone. A refusal already recorded for the same content is left alone (no write, no
    repeated warning every minute)."""
    known = dict(db.session.execute(select(ChecklistRefusal.path, ChecklistRefusal.content_hash)).all())
    for name, (digest, problems) in refused.items():
        if known.get(name) == digest:
            continue
        log.warning("checklist %s refused, the last good version keeps serving:\n%s",
                    name, "\n".join(map(str, problems)))
        rows = [{"line": p.line, "message": p.message} for p in problems]
        statement = _insert(ChecklistRefusal).values(path=name, content_hash=digest, problems=rows,
                                                     refused_at=utcnow())
        db.session.execute(statement.on_conflict_do_update(
            index_elements=["path"], set_={"content_hash": digest, "problems": rows,
                                           "refused_at": statement.excluded.refused_at}))
    cleared = set(known) - set(refused)
    if cleared:
        db.session.execute(delete(ChecklistRefusal).where(ChecklistRefusal.path.in_(cleared)))


def current_problems() -> list[ChecklistProblem]:
    """Every problem of every refused file, as the last sync (by any process) recorded them."""
    return [ChecklistProblem(row.path, problem["line"], problem["message"])
            for row in db.session.scalars(select(ChecklistRefusal).order_by(ChecklistRefusal.path))
            for problem in row.problems]


def refused_count() -> int:
    return db.session.scalar(select(func.count()).select_from(ChecklistRefusal))


def latest_versions() -> list[ChecklistVersion]:
    """The newest version of every checklist, by title."""
    newest = (select(ChecklistVersion.slug, func.max(ChecklistVersion.loaded_at).label("at"))
              .group_by(ChecklistVersion.slug).subquery())
    return list(db.session.scalars(
        select(ChecklistVersion).join(newest, (ChecklistVersion.slug == newest.c.slug)
                                      & (ChecklistVersion.loaded_at == newest.c.at))
        .order_by(ChecklistVersion.title)))


def _newest_id(slug: str) -> int | None:
    return db.session.scalar(select(ChecklistVersion.id).where(ChecklistVersion.slug == slug)
                             .order_by(ChecklistVersion.loaded_at.desc(), ChecklistVersion.id.desc()).limit(1))


def latest_version(slug: str) -> ChecklistVersion | None:
    newest = _newest_id(slug)
    return db.session.get(ChecklistVersion, newest) if newest else None


def checklist_of(version: ChecklistVersion) -> Checklist:
    """The parsed checklist a version pinned."""
    checklist = _parsed.get(version.content_hash)
    if checklist is None:
        checklist = _parsed[version.content_hash] = Checklist.from_json(version.content)
    return checklist


def checklist_by_hash(version_id: int, content_hash: str) -> Checklist:
    """`checklist_of` for a version known by id and content hash: it is loaded (and its
    content read) only if this process has not parsed that content yet."""
    checklist = _parsed.get(content_hash)
    return checklist if checklist is not None else checklist_of(db.session.get(ChecklistVersion, version_id))


def checklists_by_version() -> dict[int, Checklist]:
    """Every version's parsed checklist, by version id, in one query: the content comes back
    only for versions this process has not parsed yet. Kept for the rest of the transaction
    (a page asks several times); `_store` forgets it when it adds a version."""
    cached = db.session.info.get("checklists_by_version")
    if cached is not None and cached[0] is db.session().get_transaction():
        return cached[1]
    unparsed = type_coerce(case((ChecklistVersion.content_hash.in_(list(_parsed)), null()),
                                else_=ChecklistVersion.content), ChecklistVersion.content.type)
    found = {}
    for version_id, content_hash, content in db.session.execute(
            select(ChecklistVersion.id, ChecklistVersion.content_hash, unparsed.label("content"))):
        if content_hash not in _parsed:
            _parsed[content_hash] = Checklist.from_json(content)
        found[version_id] = _parsed[content_hash]
    db.session.info["checklists_by_version"] = (db.session().get_transaction(), found)
    return found
