"""Typed models of events, reports, their files, and uploads."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Event(Base):
    """A candidate (one graceid) with reports from one or more sites."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_created", "created"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    graceid: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    reports: Mapped[list[Report]] = relationship(back_populates="event")


class Report(Base):
    """One ``<graceid>_<site>_<revision>`` directory of one project."""

    __tablename__ = "reports"
    __table_args__ = (
        UniqueConstraint("event_id", "project", "site", "revision", name="uq_reports_identity"),
        # Recent reports, newest first, paged by (updated, id).
        Index("ix_reports_updated_id", "updated", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    project: Mapped[str] = mapped_column(String(64))
    site: Mapped[str] = mapped_column(String(32))
    revision: Mapped[int]
    path: Mapped[str] = mapped_column(Text, doc="relative to the project's reports root")
    url: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    file_count: Mapped[int] = mapped_column(default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)

    event: Mapped[Event] = relationship(back_populates="reports")
    files: Mapped[list[ReportFile]] = relationship(back_populates="report")


class ReportFile(Base):
    """One published file inside a report directory."""

    __tablename__ = "report_files"
    __table_args__ = (
        UniqueConstraint("report_id", "relpath", name="uq_report_files_path"),
        Index("ix_report_files_upload_id", "upload_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"), index=True)
    relpath: Mapped[str] = mapped_column(Text, doc="relative to the report directory")
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    upload_id: Mapped[str | None] = mapped_column(String(64))
    principal: Mapped[str | None] = mapped_column(String(256))
    published: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    report: Mapped[Report] = relationship(back_populates="files")


class Upload(Base):
    """A tus upload carrying a report payload, and what became of it."""

    __tablename__ = "uploads"
    __table_args__ = (
        Index("ix_uploads_created", "created"),
        # Crash recovery looks for uploads still "receiving".
        Index("ix_uploads_state", "state"),
        # The next place in the order of finalizations is max() + 1.
        Index("ix_uploads_finalize_order", "finalize_order"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal: Mapped[str | None] = mapped_column(String(256))
    project: Mapped[str | None] = mapped_column(String(64))
    graceid: Mapped[str | None] = mapped_column(String(64), index=True)
    site: Mapped[str | None] = mapped_column(String(32))
    revision: Mapped[int | None]
    subdir: Mapped[str | None] = mapped_column(Text)
    filename: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(String(16))
    sha256: Mapped[str | None] = mapped_column(String(64))
    length: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="created")
    error: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    report_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id"))
    finalize_order: Mapped[int | None] = mapped_column(
        BigInteger,
        doc="the upload's place in the order of finalizations, taken when its first "
        "finalization began (under the report's lock, so it increases within a report)",
    )


class SupersededPath(Base):
    """A path that an upload whose finalization was cut must leave alone when
    it is finalized again: a later upload of the same report published it.

    Written by the later upload before it publishes; the cut upload's rows go
    when its finalization is recorded.
    """

    __tablename__ = "superseded_paths"

    id: Mapped[int] = mapped_column(primary_key=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), index=True)
    relpath: Mapped[str] = mapped_column(Text, doc="relative to the report directory")
