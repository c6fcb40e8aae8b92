"""Rows of events and reports written straight into a server's database, for
tests of the read side (the links API, pages) that need many or dated reports.
The write side (uploads, finalization) has its own end-to-end tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from dqrxfer.server.db import Database, Event, Report

BASE_TIME = datetime(2023, 5, 18, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Seed:
    graceid: str
    site: str
    revision: int
    project: str = "O4"
    minutes: int = 0  #: updated = BASE_TIME + minutes
    file_count: int = 1
    total_bytes: int = 100

    @property
    def updated(self) -> datetime:
        return BASE_TIME + timedelta(minutes=self.minutes)

    @property
    def url(self) -> str:
        return (
            f"/reports/{self.project}/{self.graceid}_dir/"
            f"{self.graceid}_{self.site}_{self.revision}/"
        )


def seed(database_url: str, rows: list[Seed]) -> None:
    """Insert the events and reports of ``rows`` (in order: ids follow it)."""
    database = Database(database_url)
    try:
        with database.session(write=True) as session:
            events: dict[str, Event] = {
                event.graceid: event for event in session.scalars(select(Event)).all()
            }
            for row in rows:
                event = events.get(row.graceid)
                if event is None:
                    event = Event(graceid=row.graceid, created=row.updated)
                    session.add(event)
                    events[row.graceid] = event
                session.add(
                    Report(
                        event=event,
                        project=row.project,
                        site=row.site,
                        revision=row.revision,
                        path=row.url.split("/", 3)[3].rstrip("/"),
                        url=row.url,
                        created=row.updated - timedelta(seconds=30),
                        updated=row.updated,
                        file_count=row.file_count,
                        total_bytes=row.total_bytes,
                    )
                )
                session.flush()
    finally:
        database.dispose()
