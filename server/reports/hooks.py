"""The reports domain plugged into the tus hooks.

``pre_create`` validates the metadata against the contract and the project
configuration (400 naming the field and rule); ``post_create`` records the
upload; ``post_finish`` verifies and publishes the payload.  Partial uploads
of the concatenation extension carry no report metadata: they are neither
validated nor recorded nor published; the final upload made of them is.
"""

from __future__ import annotations

import logging

from dqrxfer import contract
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import Database, Upload
from ..db.models import utcnow
from ..tus import HookRejection, TusHooks, UploadInfo
from ..tus.store import FileStore
from .finalize import FinalizeError, finalize_upload

log = logging.getLogger("dqrxfer.reports")


def validate_for_settings(metadata: dict[str, str], settings: Settings) -> contract.ReportUpload:
    """Validate against the contract, then the chosen project's own sites."""
    target = contract.validate_metadata(metadata, settings.projects, settings.sites)
    project = settings.projects[target.project]
    if target.site not in project.sites:
        raise contract.ContractError(
            contract.KEY_UPLOADER,
            f"project {project.name} accepts sites {', '.join(project.sites)}",
            target.site,
        )
    return target


class ReportHooks(TusHooks):
    def __init__(self, settings: Settings, database: Database, store: FileStore) -> None:
        self.settings = settings
        self.database = database
        self.store = store

    def pre_create(self, info: UploadInfo) -> None:
        if info.is_partial:
            return
        try:
            target = validate_for_settings(info.metadata, self.settings)
        except contract.ContractError as error:
            raise HookRejection(400, str(error)) from None
        project = self.settings.projects[target.project]
        if info.length is not None and info.length > project.max_upload_size:
            raise HookRejection(
                413,
                f"Upload-Length: project {project.name} accepts at most "
                f"{project.max_upload_size} bytes",
            )
        if target.kind == contract.KIND_TAR:
            raise HookRejection(400, "kind: tar archives are not accepted by this server yet")
        info.metadata = {**info.metadata, **target.to_metadata()}

    def post_create(self, info: UploadInfo) -> None:
        if info.is_partial:
            return
        target = contract.validate_metadata(
            info.metadata, self.settings.projects, self.settings.sites
        )
        with self.database.session(write=True) as session:
            session.add(_upload_row(info, target))

    def post_finish(self, info: UploadInfo) -> dict[str, str]:
        if info.is_partial:
            return {}
        try:
            with self.database.session(write=True) as session:
                report = finalize_upload(
                    session, self.settings, info, self.store.data_path(info.id)
                )
                return {"Dqr-Report-Url": report.url}
        except FinalizeError as error:
            self._mark_failed(info.id, str(error))
            raise HookRejection(error.status, str(error)) from None

    def post_terminate(self, info: UploadInfo) -> None:
        self._mark_ended(info.id, "terminated")

    def post_expire(self, info: UploadInfo) -> None:
        self._mark_ended(info.id, "expired")

    def _mark_ended(self, upload_id: str, state: str) -> None:
        """An upload removed before it was published (a published one keeps its state)."""
        with self.database.session(write=True) as session:
            row = session.get(Upload, upload_id)
            if row is not None and row.state != "published":
                row.state = state
                row.finished = utcnow()

    def _mark_failed(self, upload_id: str, message: str) -> None:
        with self.database.session(write=True) as session:
            row = session.get(Upload, upload_id)
            if row is not None:
                row.state = "failed"
                row.error = message
                row.finished = utcnow()


def _upload_row(info: UploadInfo, target: contract.ReportUpload) -> Upload:
    return Upload(
        id=info.id,
        principal=info.owner,
        project=target.project,
        graceid=target.graceid,
        site=target.site,
        revision=target.revision,
        subdir=target.subdir,
        filename=target.filename,
        kind=target.kind,
        sha256=target.sha256,
        length=info.length,
        state="receiving",
    )


def upload_row(session: Session, upload_id: str) -> Upload | None:
    return session.get(Upload, upload_id)
