"""Database records of reports: find-or-create events and reports, record
published files, keep a report's totals in step.  Every function is
idempotent so finalization can run twice."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db.models import Event, Report, ReportFile, utcnow


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


def record_file(
    session: Session,
    report: Report,
    relpath: str,
    size: int,
    sha256: str | None,
    upload_id: str | None,
    principal: str | None,
    when: datetime | None = None,
) -> ReportFile:
    """Insert or replace the row of one published file and refresh the report totals."""
    when = when or utcnow()
    row = session.scalars(
        select(ReportFile).where(ReportFile.report_id == report.id, ReportFile.relpath == relpath)
    ).one_or_none()
    if row is None:
        row = ReportFile(report=report, relpath=relpath)
        session.add(row)
    row.size = size
    row.sha256 = sha256
    row.upload_id = upload_id
    row.principal = principal
    row.published = when
    session.flush()
    refresh_totals(session, report, when)
    return row


def refresh_totals(session: Session, report: Report, when: datetime | None = None) -> None:
    count, total = session.execute(
        select(func.count(ReportFile.id), func.coalesce(func.sum(ReportFile.size), 0)).where(
            ReportFile.report_id == report.id
        )
    ).one()
    report.file_count = int(count)
    report.total_bytes = int(total)
    report.updated = when or utcnow()
