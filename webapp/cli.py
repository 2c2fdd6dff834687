"""Operator commands: `flask users ...`, `flask checklists ...`, `flask probes ...`,
`flask assessments ...`, `flask demo ...`, `flask reports ...`, `flask tokens ...`,
`flask flags ...`, `flask db-backup`, `flask db-restore`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import select

from webapp.extensions import db


def register(app: Flask) -> None:
    app.cli.add_command(users)
    app.cli.add_command(checklists_group)
    app.cli.add_command(probes_group)
    app.cli.add_command(assessments_group)
    app.cli.add_command(demo_group)
    app.cli.add_command(tokens_group)
    app.cli.add_command(reports_group)
    app.cli.add_command(db_backup)
    app.cli.add_command(db_restore)
    app.cli.add_command(flags_group)


# Users ---------------------------------------------------------------------------------

@click.group("users")
def users() -> None:
    """Manage accounts."""


def _read_password() -> str:
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return sys.stdin.readline().rstrip("\n")


@users.command("create")
@click.argument("email")
@click.option("--name", default=None, help="Display name (defaults to the part before @).")
@click.option("--admin", is_flag=True, help="Make the account an admin.")
@click.option("--reviewer", is_flag=True, help="Let the account approve waivers and sign off.")
def users_create(email: str, name: str | None, admin: bool, reviewer: bool) -> None:
    """Create an account; the password comes from a prompt, or standard input if piped."""
    from webapp import accounts

    password = _read_password()
    try:
        user = accounts.create_user(email, name or email.split("@")[0], password,
                                    is_admin=admin, is_reviewer=reviewer)
    except accounts.AccountError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    roles = [r for r, on in (("admin", user.is_admin), ("reviewer", user.is_reviewer)) if on]
    click.echo(f"created {user.email}" + (f" ({', '.join(roles)})" if roles else ""))


@users.command("list")
def users_list() -> None:
    """List accounts."""
    from webapp.models import User

    for user in db.session.scalars(select(User).order_by(User.email)):
        flags = [f for f, on in (("admin", user.is_admin), ("reviewer", user.is_reviewer),
                                 ("disabled", user.disabled_at is not None)) if on]
        click.echo(f"{user.email}\t{user.name}\t{','.join(flags)}")


@users.command("disable")
@click.argument("email")
def users_disable(email: str) -> None:
    """Disable an account: it can no longer sign in; its history stays."""
    from webapp import accounts

    user = accounts.user_by_email(email)
    if user is None:
        raise click.ClickException(f"no account for {email}")
    accounts.disable_user(user, None)
    db.session.commit()
    click.echo(f"disabled {user.email}")


# Checklists ----------------------------------------------------------------------------

@click.group("checklists")
def checklists_group() -> None:
    """Validate, list, load and compare checklist files."""


@checklists_group.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
def checklists_validate(paths: tuple[Path, ...]) -> None:
    """Validate checklist files (default: every checklist directory). Exit 1 on errors."""
    from webapp import catalog
    from webapp.checklists import discover, validate_paths

    files = [p for p in paths if p.is_file()] + discover([p for p in paths if p.is_dir()])
    if not paths:
        files = discover(catalog.checklist_dirs())
    problems = validate_paths(list(paths) or files)
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        sys.exit(1)
    click.echo(f"ok: {len(files)} file(s) valid")


@checklists_group.command("sync")
def checklists_sync() -> None:
    """Load every checklist file into the database (new contents become new versions)."""
    from webapp import catalog

    problems = catalog.sync(force=True)
    db.session.commit()
    for problem in problems:
        click.echo(f"refused: {problem}", err=True)
    for version in catalog.latest_versions():
        click.echo(f"{version.slug}\t{version.version}\t{version.content_hash[:12]}")


@checklists_group.command("list")
def checklists_list() -> None:
    """List checklists with their newest version and item count."""
    from webapp import catalog

    catalog.sync()
    db.session.commit()
    for version in catalog.latest_versions():
        checklist = catalog.checklist_of(version)
        click.echo(f"{version.slug}\tv{version.version}\t{len(checklist.items)} items\t{version.title}")


@checklists_group.command("diff")
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def checklists_diff(old: Path, new: Path) -> None:
    """Show items added, removed, renamed (via replaces:) and changed between two files."""
    from webapp.checklists import ChecklistInvalid, diff_checklists, load_checklist

    try:
        before, after = load_checklist(old), load_checklist(new)
    except ChecklistInvalid as exc:
        raise click.ClickException(str(exc)) from None
    diff = diff_checklists(before, after)
    for key in diff.added:
        click.echo(f"+ {key}: {after.item(key).title}")
    for key in diff.removed:
        click.echo(f"- {key}: {before.item(key).title}")
    for old_key, new_key in diff.renamed.items():
        click.echo(f"~ {old_key} -> {new_key}")
    for key in diff.changed:
        click.echo(f"* {key}: changed")
    if not (diff.added or diff.removed or diff.renamed or diff.changed):
        click.echo("no differences in items")


# Probes --------------------------------------------------------------------------------

@click.group("probes")
def probes_group() -> None:
    """Run probes by hand (for cron and debugging)."""


@probes_group.command("run")
@click.argument("service", required=False)
def probes_run(service: str | None) -> None:
    """Probe one service (by id or slug) now, or every service that is due."""
    from webapp.models import ProbeResult, Service
    from webapp.probes import runs
    from webapp.probes.tasks import probe_service_ids

    if service is None:
        targets = runs.due_service_ids()
    else:
        query = select(Service.id).where(Service.slug == service)
        if service.isdigit():
            query = select(Service.id).where(Service.id == int(service))
        targets = list(db.session.scalars(query))
        if not targets:
            raise click.UsageError(f"no service with id or slug {service!r}")
    run_ids = probe_service_ids(targets, "cli")
    for row in db.session.scalars(select(ProbeResult).where(ProbeResult.run_id.in_(run_ids))
                                  .order_by(ProbeResult.service_id, ProbeResult.id)):
        click.echo(f"{row.service_id}\t{row.kind}\t{row.outcome}\t{row.explanation}")
    click.echo(f"probed {len(targets)} service(s)")


@probes_group.command("check")
@click.argument("url")
@click.option("--kind", required=True, type=click.Choice(
    ["health", "readiness", "deep_health", "metrics", "https", "tls_expiry", "security_headers",
     "correlation_id", "latency"]))
def probes_check(url: str, kind: str) -> None:
    """Run one check on any URL and print the result as one JSON object.

    Exit status: 0 pass, 1 warn/fail/error, 2 usage error.
    """
    import asyncio
    import json
    from urllib.parse import urlsplit

    from webapp.probes import runs
    from webapp.probes.rules import run_check

    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise click.UsageError(f"{url!r} is not an http:// or https:// URL")

    async def check():
        async with runs.make_fetcher() as fetcher:
            return await run_check(kind, url, fetcher)

    result = asyncio.run(check())
    click.echo(json.dumps(result.to_json(), default=str))
    sys.exit(0 if result.outcome == "pass" else 1)


# Assessments (the read model) --------------------------------------------------------

@click.group("assessments")
def assessments_group() -> None:
    """Maintain what lists show about assessments."""


@assessments_group.command("rescore")
@click.option("--all", "everything", is_flag=True,
              help="Rescore every assessment, not only those never scored or made stale by an expired waiver.")
def assessments_rescore(everything: bool) -> None:
    """Store score, verdict and counts on assessments that lack them (safe to run at every
    start: when nothing needs scoring it costs two small queries)."""
    from webapp import dashboard

    count = dashboard.rescore(everything=everything, commit=db.session.commit)
    db.session.commit()
    click.echo(f"rescored {count} assessment(s)")


# Demo data ---------------------------------------------------------------------------

@click.group("demo")
def demo_group() -> None:
    """Realistic demo data for screenshots and benchmarks."""


@demo_group.command("seed")
@click.option("--services", "service_count", default=60, show_default=True, type=click.IntRange(1, 20_000),
              help="How many services to create.")
@click.option("--assessments", "assessments_per_service", default=20, show_default=True,
              type=click.IntRange(1, 200), help="Assessments per service, over the past months.")
@click.option("--seed", "random_seed", default=7, show_default=True, help="Random seed (same seed, same data).")
@click.option("--reports", "report_count", default=5, show_default=True, type=click.IntRange(0, 1_000),
              help="Services whose latest sign-off gets a signed, stored PDF report (about a second each).")
def demo_seed(service_count: int, assessments_per_service: int, random_seed: int, report_count: int) -> None:
    """Fill the database with demo teams, people, services, assessment history and probe
    results. Demo people sign in with the password printed at the end. Where demo data is
    already here, extend it instead: approvals behind its sign-offs and stored reports."""
    import time

    from webapp import demo

    started = time.monotonic()
    if demo.present():
        counts = demo.extend(reports=report_count)
        db.session.commit()
        click.echo("Demo data is already here; extended it with "
                   + ", ".join(f"{n:,} {what}" for what, n in counts.items())
                   + f" ({time.monotonic() - started:.1f} s). For new demo data, use a fresh database.")
        return
    try:
        counts = demo.seed(services=service_count, assessments_per_service=assessments_per_service,
                           seed=random_seed, reports=report_count)
    except demo.DemoError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(", ".join(f"{n:,} {what}" for what, n in counts.items()))
    click.echo(f"seeded in {time.monotonic() - started:.1f} s; demo people sign in with "
               f"password {demo.PASSWORD!r} (e.g. {demo.first_email()})")

# Reports -------------------------------------------------------------------------------

@click.group("reports")
def reports_group() -> None:
    """List, export and verify signed PDF reports."""


@reports_group.command("list")
def reports_list() -> None:
    """One line per stored report: id, service, assessment, sha256, created."""
    from webapp.models import Assessment, Report, Service

    rows = db.session.execute(
        select(Report.id, Service.slug, Report.assessment_id, Report.sha256, Report.created_at)
        .join(Assessment, Report.assessment_id == Assessment.id)
        .join(Service, Assessment.service_id == Service.id).order_by(Report.id))
    for report_id, slug, assessment_id, sha256, created_at in rows:
        click.echo(f"{report_id}\t{slug}\t{assessment_id}\t{sha256}\t{created_at:%Y-%m-%dT%H:%M:%SZ}")


@reports_group.command("export")
@click.argument("report_id", type=int)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the PDF.")
def reports_export(report_id: int, output: Path) -> None:
    """Write a stored report's PDF, byte for byte as issued."""
    from webapp.models import Report

    report = db.session.get(Report, report_id)
    if report is None:
        raise click.ClickException(f"no report {report_id}")
    output.write_bytes(report.pdf)
    click.echo(f"wrote {output} ({len(report.pdf):,} bytes, sha256 {report.sha256})")


@reports_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def reports_verify(file: Path) -> None:
    """Is FILE a genuine report of this instance? Exit 0 genuine, 1 not (with why)."""
    from webapp import reports

    result = reports.verify_pdf(file.read_bytes())
    if result.genuine:
        report = result.report
        click.echo(f"genuine: report {report.id}, assessment {report.assessment_id} "
                   f"({report.assessment.service.slug}), signed by {result.signed_by} "
                   f"at {result.signed_at:%Y-%m-%dT%H:%M:%SZ}")
    else:
        click.echo("NOT genuine", err=True)
    for reason in result.reasons:
        click.echo(f"  {reason}", err=not result.genuine)
    sys.exit(0 if result.genuine else 1)


# API tokens ----------------------------------------------------------------------------

@click.group("tokens")
def tokens_group() -> None:
    """Make, list and revoke API tokens."""


@tokens_group.command("create")
@click.argument("email")
@click.option("--scope", "scopes", multiple=True, required=True,
              type=click.Choice(["read", "write", "probe"]), help="Repeat for more than one.")
@click.option("--expires", "days", type=click.IntRange(1, 366), default=90, show_default=True,
              help="Days until it expires.")
@click.option("--name", default="cli", show_default=True, help="What uses the token.")
@click.option("--team", "team_slug", default=None, help="Make a team token (EMAIL must maintain it).")
def tokens_create(email: str, scopes: tuple[str, ...], days: int, name: str, team_slug: str | None) -> None:
    """Print a new token for EMAIL's account; only its hash is stored, so keep the output."""
    from webapp import accounts, tokens
    from webapp.models import Team

    user = accounts.user_by_email(email)
    if user is None:
        raise click.ClickException(f"no account for {email}")
    team = None
    if team_slug:
        team = db.session.scalar(select(Team).where(Team.slug == team_slug))
        if team is None:
            raise click.ClickException(f"no team with slug {team_slug!r}")
    try:
        _, secret = tokens.create_token(user, name, list(scopes), days, team=team)
    except tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(secret)


@tokens_group.command("list")
@click.argument("email", required=False)
def tokens_list(email: str | None) -> None:
    """List tokens (of one account, or all): id, prefix, scopes, team, expiry, last use, state."""
    from webapp import accounts
    from webapp.models import ApiToken, utcnow

    query = select(ApiToken).order_by(ApiToken.id)
    if email:
        user = accounts.user_by_email(email)
        if user is None:
            raise click.ClickException(f"no account for {email}")
        query = query.where(ApiToken.user_id == user.id)
    now = utcnow()
    for token in db.session.scalars(query):
        state = "revoked" if token.revoked_at else "active" if token.is_usable(now) else "expired"
        click.echo("\t".join([str(token.id), token.prefix, token.user.email, token.scopes,
                              token.team.slug if token.team else "-",
                              token.expires_at.isoformat() if token.expires_at else "never",
                              token.last_used_at.isoformat() if token.last_used_at else "never", state]))


@tokens_group.command("revoke")
@click.argument("token_id", type=int)
def tokens_revoke(token_id: int) -> None:
    """Revoke a token by id (see `flask tokens list`)."""
    from webapp import tokens
    from webapp.models import ApiToken

    token = db.session.get(ApiToken, token_id)
    if token is None:
        raise click.ClickException(f"no token {token_id}")
    try:
        tokens.revoke_token(token, token.user)
    except tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"revoked {token.prefix}… ({token.name})")
# Backups -------------------------------------------------------------------------------

@click.command("db-backup")
@with_appcontext
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def db_backup(file: Path) -> None:
    """Write a consistent copy of the whole database to FILE (SQLite: online backup API;
    PostgreSQL: pg_dump custom format). Safe while the app runs."""
    from webapp import backup

    db.session.remove()
    try:
        backup.backup(db.engine, file)
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    counts = backup.rows_per_table(db.engine)
    click.echo(f"backed up {sum(counts.values())} rows in {len(counts)} tables to {file} "
               f"({file.stat().st_size} bytes)")


@click.command("db-restore")
@with_appcontext
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a database that already holds data.")
def db_restore(file: Path, force: bool) -> None:
    """Restore the database from FILE made by `flask db-backup`. Stop web and workers first.
    Refuses a database that holds any rows unless --force."""
    from webapp import backup

    db.session.remove()
    try:
        backup.restore(db.engine, file, force=force)
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    counts = backup.rows_per_table(db.engine)
    click.echo(f"restored {sum(counts.values())} rows in {len(counts)} tables from {file}")


# Feature flags ---------------------------------------------------------------------------

@click.group("flags")
def flags_group() -> None:
    """Run-time kill switches for risky features (webapp/flags.py)."""


@flags_group.command("list")
def flags_list() -> None:
    """One line per flag: key, on/off, last change, title."""
    from webapp import flags

    for flag, row in flags.listing():
        on = row is None or row.enabled
        changed = f"{row.changed_at:%Y-%m-%d %H:%M} {row.note}".strip() if row else "never changed"
        click.echo(f"{flag.key}\t{'on' if on else 'off'}\t{changed}\t{flag.title}")


@flags_group.command("set")
@click.argument("key")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--note", default="", help="Why (kept with the flag and in the audit log).")
def flags_set(key: str, state: str, note: str) -> None:
    """Switch feature KEY on or off, everywhere within FEATURE_FLAG_CACHE_SECONDS."""
    from webapp import flags

    try:
        changed = flags.set_flag(key, state == "on", None, note)
    except flags.FlagError as exc:
        raise click.ClickException(str(exc)) from None
    if changed:
        db.session.commit()
    click.echo(f"{key} {'is now' if changed else 'was already'} {state}")
