"""What the operator commands do with reports: list and show them, register a
report produced at CIT without a transfer, re-index an existing report tree,
and remove stale staging directories.  ``dqrxfer-server`` (``cli.py``) only
parses arguments and prints what these functions return."""

from __future__ import annotations

import getpass
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from dqrxfer import contract

from ..config import ProjectConfig, Settings
from ..db import Database, Event, Report, ReportFile
from ..db.models import utcnow
from . import ledger, publish
from .archive import ArchiveRefused
from .invariants import TreeInvariantBroken, check_tree
from .ledger import PublishedFile, ReportChange
from .staging import Staging, StagingError
from .supersession import claiming
from .tree import report_files, sha256_file, stage_directory

log = logging.getLogger("dqrxfer.reports")


class AdminError(Exception):
    """An operator command cannot do what was asked; the message says why."""


class OptionError(AdminError):
    """A command-line option's value breaks a rule (a usage error); the
    message starts with the option's name."""


# -- listing -------------------------------------------------------------------------

_RELATIVE_RE = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-27``, ``2026-11-27T10:00`` (UTC unless an offset is given), or
    an age such as ``30m``, ``12h``, ``7d``, ``2w``."""
    now = now or utcnow()
    match = _RELATIVE_RE.fullmatch(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise OptionError(
            f"--since: {text!r} is neither a date/time (2026-11-27, 2026-11-27T10:00) "
            "nor an age (30m, 12h, 7d, 2w)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes that were stored as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def list_reports(
    session: Session,
    graceid: str | None = None,
    site: str | None = None,
    project: str | None = None,
    since: datetime | None = None,
    limit: int | None = 100,
) -> list[Report]:
    """Reports, most recently updated first."""
    query = (
        select(Report).join(Event, Event.id == Report.event_id).options(selectinload(Report.event))
    )
    if graceid is not None:
        query = query.where(Event.graceid == graceid)
    if site is not None:
        query = query.where(Report.site == site)
    if project is not None:
        query = query.where(Report.project == project)
    if since is not None:
        query = query.where(Report.updated >= since)
    query = query.order_by(Report.updated.desc(), Report.id.desc())
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query))


def is_graceid(name: str) -> bool:
    """``name`` is a graceid (``S230518h``), not ``<graceid>_<site>_<revision>``."""
    try:
        contract.validate_graceid(name)
    except contract.ContractError:
        return False
    return True


def find_reports(
    session: Session, name: str, settings: Settings, project: str | None
) -> list[Report]:
    """Reports named ``<graceid>_<site>_<revision>`` (in ``project`` if given)."""
    try:
        graceid, site, revision = contract.parse_report_dirname(name, settings.sites)
    except contract.ContractError as error:
        raise OptionError(f"{error}; or a graceid (S230518h) for the event's reports") from None
    query = (
        select(Report)
        .join(Event, Event.id == Report.event_id)
        .where(Event.graceid == graceid, Report.site == site, Report.revision == revision)
        .options(selectinload(Report.event), selectinload(Report.files))
        .order_by(Report.project)
    )
    if project is not None:
        query = query.where(Report.project == project)
    return list(session.scalars(query))


def report_summary(report: Report) -> dict[str, object]:
    return {
        "graceid": report.event.graceid,
        "site": report.site,
        "revision": report.revision,
        "project": report.project,
        "path": report.path,
        "url": report.url,
        "created": as_utc(report.created).isoformat(),
        "updated": as_utc(report.updated).isoformat(),
        "file_count": report.file_count,
        "bytes": report.total_bytes,
    }


def file_summary(row: ReportFile) -> dict[str, object]:
    return {
        "path": row.relpath,
        "size": row.size,
        "sha256": row.sha256,
        "upload": row.upload_id,
        "principal": row.principal,
        "published": as_utc(row.published).isoformat(),
    }


# -- indexing a report as it is on disk --------------------------------------------


@dataclass
class IndexResult:
    new: bool = False
    changed: bool = False
    hashed: int = 0
    removed: int = 0


def index_report(
    session: Session,
    project: ProjectConfig,
    relpath: str,
    graceid: str,
    site: str,
    revision: int,
    principal: str | None,
    rehash: bool = False,
    dry_run: bool = False,
) -> IndexResult:
    """Make the rows of one report match its directory (files are only read).

    A file whose row has the same size and was recorded after the file last
    changed keeps its digest; others are hashed (all of them with ``rehash``).
    Rows of files that are gone are dropped.  A tree that breaks the report
    tree's invariant (:mod:`.invariants`) is not indexed: :class:`AdminError`
    names the entry and the rule.
    """
    result = IndexResult()
    report_dir = project.reports_root / relpath
    try:
        check_tree(report_dir)
    except TreeInvariantBroken as error:
        raise AdminError(f"{project.name}/{relpath}: {error}; not indexed") from None
    found = list(report_files(report_dir))
    existing = find_report(session, graceid, project.name, site, revision)
    if existing is not None and existing.path != relpath:
        raise AdminError(
            f"{relpath}: {project.name} already records this report at {existing.path}"
        )
    rows: dict[str, ReportFile] = {}
    if existing is not None:
        rows = {
            row.relpath: row
            for row in session.scalars(
                select(ReportFile).where(ReportFile.report_id == existing.id)
            )
        }
    changed: list[PublishedFile] = []
    for entry in found:
        row = rows.get(entry.relpath)
        fresh = (
            row is not None
            and not rehash
            and row.size == entry.size
            and as_utc(row.published).timestamp() >= entry.mtime
        )
        if fresh:
            continue
        result.hashed += 1
        digest = None if dry_run else sha256_file(report_dir / entry.relpath)
        changed.append(PublishedFile(entry.relpath, entry.size, digest))
    on_disk = {entry.relpath for entry in found}
    gone = [path for path in rows if path not in on_disk]
    result.removed = len(gone)
    result.new = existing is None
    result.changed = bool(changed or gone)
    if dry_run or not (result.new or result.changed):
        return result
    now = utcnow()
    connection = session.connection()
    report_id, _url = ledger.record_report(
        connection,
        _operator_change(project, graceid, site, revision, relpath, changed, gone, principal, now),
    )
    newest = max((entry.mtime for entry in found), default=None)
    if result.new and newest is not None:
        # An adopted report is as old as its newest file, not as the indexing.
        ledger.backdate_report(connection, report_id, min(datetime.fromtimestamp(newest, UTC), now))
    return result


def _operator_change(
    project: ProjectConfig,
    graceid: str,
    site: str,
    revision: int,
    relpath: str,
    files: list[PublishedFile],
    removed: list[str],
    principal: str | None,
    when: datetime,
) -> ReportChange:
    """What an operator command (no upload) records of one report."""
    return ReportChange(
        graceid,
        project.name,
        site,
        revision,
        relpath,
        project.report_url(relpath),
        files,
        removed,
        None,
        principal,
        when,
    )


def find_report(
    session: Session, graceid: str, project: str, site: str, revision: int
) -> Report | None:
    """The report's row as the database has it now (also after this
    session's own writes through :mod:`.ledger`)."""
    return session.scalars(
        select(Report)
        .join(Event, Event.id == Report.event_id)
        .where(
            Event.graceid == graceid,
            Report.project == project,
            Report.site == site,
            Report.revision == revision,
        )
        .execution_options(populate_existing=True)
    ).one_or_none()


def operator() -> str:
    """Who ran the command, as recorded with the files it publishes."""
    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator"


class _DryRun(Exception):
    """Raised inside a session to roll a dry run back."""


@contextmanager
def _session(database: Database, dry_run: bool) -> Iterator[Session]:
    try:
        with database.session(write=True) as session:
            yield session
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass


@contextmanager
def _report_lock(project: ProjectConfig, relpath: str) -> Iterator[None]:
    """The report's lock, when the staging area can be written (a read-only
    tree can still be indexed, without the lock)."""
    staging = Staging(project.staging, project.reports_root)
    try:
        staging.ensure()
    except (OSError, StagingError) as error:
        log.warning("indexing %s without its lock: %s", relpath, error)
        yield
        return
    with staging.report_lock(relpath):
        yield


# -- reindex -------------------------------------------------------------------------


@dataclass
class ReindexSummary:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    hashed: int = 0
    removed: int = 0
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _report_dirs(
    project: ProjectConfig, sites: Iterable[str], summary: ReindexSummary
) -> Iterator[tuple[str, str, str, int]]:
    root = project.reports_root
    if not root.is_dir():
        return
    for event_dir in sorted(root.iterdir()):
        if event_dir.name.startswith(".") or not event_dir.is_dir() or event_dir.is_symlink():
            continue
        where = f"{project.name}/{event_dir.name}"
        if not event_dir.name.endswith("_dir"):
            summary.skipped.append(f"{where}: not named <graceid>_dir")
            continue
        graceid = event_dir.name[: -len("_dir")]
        try:
            contract.validate_graceid(graceid)
        except contract.ContractError as error:
            summary.skipped.append(f"{where}: {error}")
            continue
        for report_dir in sorted(event_dir.iterdir()):
            if report_dir.name.startswith(".") or not report_dir.is_dir():
                continue
            where = f"{project.name}/{event_dir.name}/{report_dir.name}"
            try:
                found, site, revision = contract.parse_report_dirname(report_dir.name, sites)
            except contract.ContractError as error:
                summary.skipped.append(f"{where}: {error}")
                continue
            if found != graceid:
                summary.skipped.append(f"{where}: graceid differs from its event directory")
                continue
            yield f"{event_dir.name}/{report_dir.name}", graceid, site, revision


def reindex(
    settings: Settings,
    database: Database,
    projects: Iterable[str] | None = None,
    rehash: bool = False,
    dry_run: bool = False,
) -> ReindexSummary:
    """Bring the database in line with the report trees (files are never changed)."""
    summary = ReindexSummary()
    chosen = (
        [settings.projects[name] for name in projects]
        if projects
        else list(settings.projects.values())
    )
    principal = operator()
    for project in chosen:
        seen: set[str] = set()
        for relpath, graceid, site, revision in _report_dirs(project, settings.sites, summary):
            seen.add(relpath)
            try:
                with _report_lock(project, relpath), _session(database, dry_run) as session:
                    result = index_report(
                        session,
                        project,
                        relpath,
                        graceid,
                        site,
                        revision,
                        principal,
                        rehash,
                        dry_run,
                    )
            except AdminError as error:
                summary.skipped.append(str(error))
                continue
            summary.hashed += result.hashed
            summary.removed += result.removed
            if result.new:
                summary.new += 1
            elif result.changed:
                summary.updated += 1
            else:
                summary.unchanged += 1
        with database.session() as session:
            for path in session.scalars(select(Report.path).where(Report.project == project.name)):
                if path not in seen:
                    summary.missing.append(f"{project.name}/{path}")
    return summary


# -- register ------------------------------------------------------------------------


@dataclass(frozen=True)
class Registered:
    url: str
    files: int
    in_place: bool


def register(
    settings: Settings,
    database: Database,
    project_name: str | None,
    graceid: str,
    site: str,
    revision: int | str,
    source: Path,
    subdir: str = "",
) -> Registered:
    """Record a report produced at CIT without a transfer (the old ``--set-dir``).

    If ``source`` is the report's own directory in the project's tree, it is
    indexed where it is.  Otherwise its content is published into the report
    like one more pass: staged, checked by the rules archives follow (names,
    types, links), swapped in, and recorded.
    """
    project = _project(settings, project_name)
    with _option("--graceid"):
        graceid = contract.validate_graceid(graceid)
    with _option("--site"):
        site = contract.validate_site(site, project.sites)
    with _option("--revision"):
        revision = contract.validate_revision(revision)
    with _option("--subdir"):
        subdir = contract.validate_subdir(subdir)
    source = Path(source)
    if not source.is_dir():
        raise OptionError(f"--path: {source} is not a directory")
    staging = Staging(project.staging, project.reports_root)
    staging.ensure()
    principal = operator()
    relpath = contract.report_relpath(graceid, site, revision)
    with staging.report_lock(relpath):
        with database.session() as session:
            existing = find_report(session, graceid, project.name, site, revision)
            if existing is not None:
                relpath = existing.path
        report_dir = project.reports_root / relpath
        if source.resolve() == report_dir.resolve():
            if subdir:
                raise OptionError("--subdir: not used when --path is the report directory itself")
            with database.session(write=True) as session:
                index_report(session, project, relpath, graceid, site, revision, principal)
                report = find_report(session, graceid, project.name, site, revision)
                assert report is not None
                return Registered(report.url, report.file_count, in_place=True)
        with staging.workdir("register") as work:
            extract = work / "extract"
            extract.mkdir()
            try:
                staged = stage_directory(source, extract, project.tar)
                publish.check_overlay(report_dir, subdir, staged)
            except ArchiveRefused as error:
                where = f"entry {error.member!r}: " if error.member else ""
                raise AdminError(f"{source}: {where}{error.rule}; nothing was published") from None
            except publish.PublishConflict as error:
                raise AdminError(f"{source}: {error}; nothing was published") from None
            prefix = f"{subdir}/" if subdir else ""
            try:
                with _superseding_cut_uploads(
                    database,
                    settings,
                    (graceid, project.name, site, revision),
                    [prefix + name for name in [*staged.files, *staged.links]],
                ):
                    publish.make_dirs(report_dir.parent, project.reports_root, settings.durable)
                    publish.publish_tree(staged, report_dir, subdir, work, durable=settings.durable)
            except TreeInvariantBroken as error:
                raise AdminError(f"{source}: {error}; nothing was published") from None
        files = [
            PublishedFile(prefix + name, entry.size, entry.sha256)
            for name, entry in sorted(staged.files.items())
        ]
        links = [prefix + name for name in staged.links]
        change = _operator_change(
            project, graceid, site, revision, relpath, files, links, principal, utcnow()
        )
        with database.transaction(write=True) as connection:
            _report_id, url = ledger.record_report(connection, change)
        return Registered(url, len(files), in_place=False)


@contextmanager
def _option(name: str) -> Iterator[None]:
    """A value that breaks a rule of the contract, named by the option that gave
    it (``--site: must be one of ...``, not the metadata key ``uploader``)."""
    try:
        yield
    except contract.ContractError as error:
        raise OptionError(f"{name}: {str(error).removeprefix(f'{error.field}: ')}") from None


def _superseding_cut_uploads(
    database: Database,
    settings: Settings,
    identity: tuple[str, str, str, int],
    paths: list[str],
) -> AbstractContextManager[None]:
    """A registered directory is later than every upload of the report whose
    finalization was cut: they leave its paths alone when finalized again
    (recorded durably before the paths are published, withdrawn if the
    publication is refused)."""
    with database.transaction() as connection:
        cut = ledger.cut_uploads(connection, *identity)
    return claiming(database, cut, paths, durable=settings.durable)


def _project(settings: Settings, name: str | None) -> ProjectConfig:
    if name is None:
        if len(settings.projects) == 1:
            return next(iter(settings.projects.values()))
        raise OptionError(f"--project: required (one of {', '.join(sorted(settings.projects))})")
    with _option("--project"):
        name = contract.validate_project(name, settings.projects)
    return settings.projects[name]


# -- cleanup -------------------------------------------------------------------------


def remove_stale_staging(
    settings: Settings, older_than: float = 3600.0, dry_run: bool = False
) -> list[Path]:
    """Staging directories of finalizations that died, in every project."""
    removed: list[Path] = []
    for project in settings.projects.values():
        staging = Staging(project.staging, project.reports_root)
        removed += staging.remove_stale(older_than=older_than, dry_run=dry_run)
    return removed
