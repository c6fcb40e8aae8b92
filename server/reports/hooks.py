"""The reports domain plugged into the tus hooks.

``pre_create`` validates the metadata against the contract and the project
configuration (400 naming the field and rule); ``post_create`` records the
upload; ``post_finish`` verifies and publishes the payload (422 naming the
field, or the archive member, and the rule when it cannot be published).
Partial uploads of the concatenation extension are neither recorded nor
published; the final upload made of them is.  A partial upload may carry the
report metadata of the final upload it is meant for (``dqr-upload`` sends a
large payload that way, while it computes the sha256 the final upload then
adds): it is then checked at creation like a final upload's, so a payload the
final upload would be refused for is refused before any of it is sent, and
is otherwise unused.  A partial upload without report metadata is not checked.
"""

from __future__ import annotations

import logging
from urllib.parse import urljoin

from dqrxfer import contract
from flask import has_request_context, request

from ..config import Settings
from ..db import Database, Upload
from ..db.models import utcnow
from ..tus import HookRejection, TusHooks, UploadInfo
from ..tus.locker import Locker
from ..tus.store import FileStore
from . import ledger
from .finalize import FinalizeError, finalize_upload
from .validation import validate_for_settings

__all__ = ["ReportHooks", "validate_for_settings"]

log = logging.getLogger("dqrxfer.reports")


class ReportHooks(TusHooks):
    # post_finish hard-links the data into the report tree and fsyncs there.
    publishes_finished_uploads = True

    def __init__(
        self,
        settings: Settings,
        database: Database,
        store: FileStore,
        locker: Locker | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.store = store
        self.locker = locker

    def pre_create(self, info: UploadInfo) -> None:
        if info.is_partial and not _names_a_report(info.metadata):
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
        if not info.is_partial:
            info.metadata = {**info.metadata, **target.to_metadata()}

    def post_create(self, info: UploadInfo) -> None:
        if info.is_partial:
            return
        target = contract.validate_metadata(
            info.metadata, self.settings.projects, self.settings.sites
        )
        with self.database.transaction(write=True) as connection:
            ledger.insert_upload(connection, _upload_row(info, target))

    def post_finish(self, info: UploadInfo) -> dict[str, str]:
        if info.is_partial:
            return {}
        try:
            url = finalize_upload(
                self.database,
                self.settings,
                info,
                self.store.data_path(info.id),
                known_sha256=self.store.known_sha256(info.id),
            )
        except FinalizeError as error:
            self._mark_failed(info.id, str(error))
            raise HookRejection(error.status, str(error)) from None
        finally:
            if self.store.digests is not None:
                self.store.digests.forget(info.id)
        if has_request_context():  # relative report URLs (embedded default) resolve here
            url = urljoin(request.host_url, url)
        return {"Dqr-Report-Url": url}

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
        log.warning("upload %s refused: %s", upload_id, message)
        with self.database.session(write=True) as session:
            row = session.get(Upload, upload_id)
            if row is not None and row.state != "published":
                row.state = "failed"
                row.error = message
                row.finished = utcnow()


def _names_a_report(metadata: dict[str, str]) -> bool:
    """Whether upload metadata names a report target (as the authorization
    layer decides whether there is anything to authorize)."""
    return contract.KEY_PROJECT in metadata or contract.KEY_UPLOADER in metadata


def _upload_row(info: UploadInfo, target: contract.ReportUpload) -> dict[str, object]:
    return {
        "id": info.id,
        "principal": info.owner,
        "project": target.project,
        "graceid": target.graceid,
        "site": target.site,
        "revision": target.revision,
        "subdir": target.subdir,
        "filename": target.filename,
        "kind": target.kind,
        "sha256": target.sha256,
        "length": info.length,
        "state": "receiving",
        "created": utcnow(),
    }
