"""The database reads behind the JSON API: one query per list (no N+1), each
served by an index (events.graceid, reports.event_id, reports.updated)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import Connection, Integer, Row, Select, bindparam, func, literal, select, tuple_
from sqlalchemy.orm import Session

from ..db import Event, Report, ReportFile
from .params import ReportCursor

if TYPE_CHECKING:
    #: A row of REPORT_COLUMNS (and, for some queries, more).
    ReportRow: TypeAlias = Row[*tuple[Any, ...]]
    ReportSelect: TypeAlias = Select[*tuple[Any, ...]]
    #: A row of a report's files (relpath, size, sha256, ...).
    FileRow: TypeAlias = Row[*tuple[Any, ...]]

#: The columns of one report row as the API shows it (no ORM objects: plain rows are cheaper).
REPORT_COLUMNS = (
    Event.graceid,
    Report.id,
    Report.site,
    Report.revision,
    Report.project,
    Report.url,
    Report.created,
    Report.updated,
    Report.file_count,
    Report.total_bytes,
)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes that were stored as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def event_reports_query(
    graceid: str, site: str | None = None, project: str | None = None
) -> ReportSelect:
    """The links lookup: events.graceid (unique index), then reports.event_id (index)."""
    return _LOOKUPS[site is not None, project is not None].params(
        graceid=graceid, site=site, project=project
    )


def _lookup(by_site: bool, by_project: bool) -> ReportSelect:
    query = (
        select(*REPORT_COLUMNS)
        .join(Event, Event.id == Report.event_id)
        .where(Event.graceid == bindparam("graceid"))
        .order_by(Report.site, Report.revision, Report.project)
    )
    if by_site:
        query = query.where(Report.site == bindparam("site"))
    if by_project:
        query = query.where(Report.project == bindparam("project"))
    return query


# Built once: the statement cache then compiles each of them once per process.
_LOOKUPS = {
    (by_site, by_project): _lookup(by_site, by_project)
    for by_site in (False, True)
    for by_project in (False, True)
}


def event_reports(
    connection: Connection,
    graceid: str,
    site: str | None = None,
    latest: bool = False,
    project: str | None = None,
) -> list[ReportRow]:
    """Every report of one event, by site then revision; ``latest`` keeps the
    newest revision of each site in each project (the most recently updated
    one on a tie): revisions are numbered per project, so a ``personal``
    report never hides an ``O4`` one.

    Runs on a plain connection: the hot path of every report page's poll has
    no use for an ORM session."""
    query = _LOOKUPS[site is not None, project is not None]
    parameters = {"graceid": graceid, "site": site, "project": project}
    rows = list(connection.execute(query, parameters).all())
    if not latest:
        return rows
    newest: dict[tuple[str, str], ReportRow] = {}
    for row in rows:
        key = (row.site, row.project)
        best = newest.get(key)
        if best is None or (row.revision, as_utc(row.updated)) > (
            best.revision,
            as_utc(best.updated),
        ):
            newest[key] = row
    return [row for row in rows if newest[row.site, row.project] is row]


_FILES = (
    select(ReportFile.report_id, ReportFile.relpath, ReportFile.size, ReportFile.sha256)
    .where(ReportFile.report_id.in_(bindparam("report_ids", expanding=True)))
    .order_by(ReportFile.report_id, ReportFile.relpath)
)


def report_files(connection: Connection, report_ids: list[int]) -> dict[int, list[FileRow]]:
    """The files of these reports (path, size, sha256), by report, in one query
    (served by the index on report_files.report_id)."""
    files: dict[int, list[FileRow]] = {report_id: [] for report_id in report_ids}
    if report_ids:
        for row in connection.execute(_FILES, {"report_ids": report_ids}):
            files[row.report_id].append(row)
    return files


@dataclass(frozen=True)
class ReportFilter:
    site: str | None = None
    project: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def recent_reports(
    session: Session, where: ReportFilter, limit: int, cursor: ReportCursor | None
) -> tuple[list[ReportRow], ReportCursor | None]:
    """Reports, most recently updated first, one page of ``limit`` after ``cursor``.

    Keyset pagination on (updated, id): a page costs the same however deep it
    is, and a report updated while a client pages moves to the front instead
    of shifting every later page.
    """
    query = select(*REPORT_COLUMNS).join(Event, Event.id == Report.event_id)
    if where.site is not None:
        query = query.where(Report.site == where.site)
    if where.project is not None:
        query = query.where(Report.project == where.project)
    if where.since is not None:
        query = query.where(Report.updated >= where.since)
    if where.until is not None:
        query = query.where(Report.updated < where.until)
    if cursor is not None:
        query = query.where(
            tuple_(Report.updated, Report.id)
            < tuple_(literal(cursor.updated, Report.updated.type), literal(cursor.id, Integer))
        )
    query = query.order_by(Report.updated.desc(), Report.id.desc()).limit(limit + 1)
    rows = list(session.execute(query).all())
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], ReportCursor(as_utc(last.updated), last.id)


@dataclass(frozen=True)
class EventSummary:
    id: int
    graceid: str
    created: datetime
    updated: datetime
    report_count: int
    sites: list[str]


def recent_events(
    session: Session, limit: int, cursor: int | None
) -> tuple[list[EventSummary], int | None]:
    """Events, newest first (by when their first report arrived), with their sites.

    Two queries for the whole page: the events, then per-site totals of their reports.
    """
    query = select(Event.id, Event.graceid, Event.created).order_by(Event.id.desc())
    if cursor is not None:
        query = query.where(Event.id < cursor)
    events = list(session.execute(query.limit(limit + 1)).all())
    next_cursor = events[limit - 1].id if len(events) > limit else None
    events = events[:limit]
    if not events:
        return [], None
    totals = session.execute(
        select(
            Report.event_id,
            Report.site,
            func.count(Report.id),
            func.max(Report.updated),
        )
        .where(Report.event_id.in_([event.id for event in events]))
        .group_by(Report.event_id, Report.site)
    ).all()
    by_event: dict[int, list[tuple[str, int, datetime]]] = {}
    for event_id, site, count, updated in totals:
        by_event.setdefault(event_id, []).append((site, count, as_utc(updated)))
    summaries = []
    for event in events:
        parts = by_event.get(event.id, [])
        created = as_utc(event.created)
        summaries.append(
            EventSummary(
                id=event.id,
                graceid=event.graceid,
                created=created,
                updated=max((when for _, _, when in parts), default=created),
                report_count=sum(count for _, count, _ in parts),
                sites=sorted(site for site, _, _ in parts),
            )
        )
    return summaries, next_cursor
