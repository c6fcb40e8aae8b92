"""Finalization of a finished upload: verify, publish, record.

Idempotent: a second run (a retried request, or crash recovery at start-up)
re-publishes the same bytes to the same name and updates the same rows.
"""

from __future__ import annotations

from pathlib import Path

from dqrxfer import contract
from sqlalchemy.orm import Session

from ..config import Settings
from ..db.models import Report, Upload, utcnow
from ..tus.store import UploadInfo
from . import publish, records


class FinalizeError(Exception):
    """The payload cannot be published; ``status`` is what the client is told."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def finalize_upload(
    session: Session, settings: Settings, info: UploadInfo, data_path: Path
) -> Report:
    target = contract.validate_metadata(info.metadata, settings.projects, settings.sites)
    project = settings.projects[target.project]
    digest = publish.sha256_of(data_path)
    if target.sha256 is not None and digest != target.sha256:
        raise FinalizeError(
            422,
            f"sha256: the received payload hashes to {digest}, not {target.sha256} "
            "as the metadata says; nothing was published",
        )
    report_dir = project.reports_root / target.report_relpath
    target_dir = report_dir / target.subdir if target.subdir else report_dir
    publish.make_dirs(target_dir, project.reports_root)
    publish.publish_file(data_path, target_dir / target.filename)

    event = records.get_or_create_event(session, target.graceid)
    report = records.get_or_create_report(
        session,
        event,
        project.name,
        target.site,
        target.revision,
        target.report_relpath,
        project.report_url(target.report_relpath),
    )
    relpath = f"{target.subdir}/{target.filename}" if target.subdir else target.filename
    size = data_path.stat().st_size
    records.record_file(session, report, relpath, size, digest, info.id, info.owner)
    upload = session.get(Upload, info.id)
    if upload is not None:
        upload.state = "published"
        upload.sha256 = digest
        upload.finished = utcnow()
        upload.report_id = report.id
        upload.error = None
    return report
