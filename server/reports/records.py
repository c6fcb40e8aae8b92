"""Database records of reports: find-or-create events and reports, record
published files, keep a report's totals in step.  Every function is
idempotent so finalization can run twice."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db.models import Event, Report, ReportFile, utcnow


@dataclass(frozen=True)
class PublishedFile:
    """One file as it now is in a report (path relative to the report directory)."""

    relpath: str
    size: int
    sha256: str | None


def get_or_create_event(session: Session, graceid: str) -> Event:
    event = session.scalars(select(Event).where(Event.graceid == graceid)).one_or_none()
    if event is not None:
        return event
    try:
        with session.begin_nested():
            event = Event(graceid=graceid)
            session.add(event)
    except IntegrityError:
        event = session.scalars(select(Event).where(Event.graceid == graceid)).one()
    return event


def find_report(
    session: Session, graceid: str, project: str, site: str, revision: int
) -> Report | None:
    return session.scalars(
        select(Report)
        .join(Event, Event.id == Report.event_id)
        .where(
            Event.graceid == graceid,
            Report.project == project,
            Report.site == site,
            Report.revision == revision,
        )
    ).one_or_none()


def get_or_create_report(
    session: Session, event: Event, project: str, site: str, revision: int, path: str, url: str
) -> Report:
    query = select(Report).where(
        Report.event_id == event.id,
        Report.project == project,
        Report.site == site,
        Report.revision == revision,
    )
    report = session.scalars(query.with_for_update()).one_or_none()
    if report is not None:
        return report
    try:
        with session.begin_nested():
            report = Report(
                event=event, project=project, site=site, revision=revision, path=path, url=url
            )
            session.add(report)
    except IntegrityError:
        report = session.scalars(query.with_for_update()).one()
    return report


def record_files(
    session: Session,
    report: Report,
    files: Iterable[PublishedFile],
    removed: Iterable[str] = (),
    upload_id: str | None = None,
    principal: str | None = None,
    when: datetime | None = None,
) -> None:
    """Insert or replace the rows of published files, drop ``removed`` paths,
    and refresh the report's totals.

    Bulk statements (one query for the existing rows, one executemany each for
    updates and inserts): a 10,000-file archive costs a few statements, not
    tens of thousands of ORM round trips.
    """
    when = when or utcnow()
    files = list(files)
    session.flush()
    existing: dict[str, int] = dict(
        session.execute(
            select(ReportFile.relpath, ReportFile.id).where(ReportFile.report_id == report.id)
        ).all()
    )
    gone = [existing[path] for path in removed if path in existing]
    for start in range(0, len(gone), _CHUNK):
        session.execute(delete(ReportFile).where(ReportFile.id.in_(gone[start : start + _CHUNK])))
    values = {"upload_id": upload_id, "principal": principal, "published": when}
    updates = [
        {"id": existing[entry.relpath], "size": entry.size, "sha256": entry.sha256, **values}
        for entry in files
        if entry.relpath in existing
    ]
    inserts = [
        {
            "report_id": report.id,
            "relpath": entry.relpath,
            "size": entry.size,
            "sha256": entry.sha256,
            **values,
        }
        for entry in files
        if entry.relpath not in existing
    ]
    if updates:
        session.execute(update(ReportFile), updates)
    if inserts:
        session.execute(insert(ReportFile), inserts)
    refresh_totals(session, report, when)


#: Rows per ``IN (...)`` list (SQLite limits the number of bound parameters).
_CHUNK = 500


def record_file(
    session: Session,
    report: Report,
    relpath: str,
    size: int,
    sha256: str | None,
    upload_id: str | None,
    principal: str | None,
    when: datetime | None = None,
) -> None:
    """Insert or replace the row of one published file and refresh the report totals."""
    record_files(
        session, report, [PublishedFile(relpath, size, sha256)], (), upload_id, principal, when
    )


def refresh_totals(session: Session, report: Report, when: datetime | None = None) -> None:
    count, total = session.execute(
        select(func.count(ReportFile.id), func.coalesce(func.sum(ReportFile.size), 0)).where(
            ReportFile.report_id == report.id
        )
    ).one()
    report.file_count = int(count)
    report.total_bytes = int(total)
    report.updated = when or utcnow()
