"""Database records of reports: find-or-create events and reports, record
published files, keep a report's totals in step.  Every function is
idempotent so finalization can run twice."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
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
    and refresh the report's totals: one query for the existing rows, not one per file."""
    when = when or utcnow()
    files = list(files)
    session.flush()
    existing = {
        row.relpath: row
        for row in session.scalars(select(ReportFile).where(ReportFile.report_id == report.id))
    }
    gone = [path for path in removed if path in existing]
    if gone:
        session.execute(
            delete(ReportFile).where(
                ReportFile.report_id == report.id, ReportFile.relpath.in_(gone)
            )
        )
    for entry in files:
        row = existing.get(entry.relpath)
        if row is None:
            row = ReportFile(report_id=report.id, relpath=entry.relpath)
            session.add(row)
        row.size = entry.size
        row.sha256 = entry.sha256
        row.upload_id = upload_id
        row.principal = principal
        row.published = when
    session.flush()
    refresh_totals(session, report, when)


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
