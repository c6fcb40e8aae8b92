"""The reports domain plugged into the tus hooks.

``pre_create`` validates the metadata against the contract and the project
configuration (400 naming the field and rule); ``post_create`` records the
upload; ``post_finish`` verifies and publishes the payload (422 naming the
field, or the archive member, and the rule when it cannot be published).
Partial uploads of the concatenation extension are neither recorded nor
published; the final upload made of them is.  Every upload names its report,
partial uploads included: a partial upload carries the report metadata of the
final upload it is meant for (``dqr-upload`` sends a large payload that way,
while it computes the sha256 the final upload then adds; tus-js-client's
``metadataForPartialUploads``), so it passes the same checks (and, in front
of these hooks, the same authorization) before any byte is stored.  A final
upload joins only partial uploads created with its own report metadata (all
of it but the sha256), see :meth:`ReportHooks.pre_create`.  Each upload's size
limit is its project's ``max_upload_size``, which the tus layer enforces on
deferred lengths, on every PATCH and on a final upload's concatenation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from urllib.parse import urljoin

from dqrxfer import contract

from ..config import Settings
from ..db import Database, Upload
from ..db.models import utcnow
from ..tus import HashingStore, HookRejection, Store, TusHooks, UploadInfo
from ..tus.locker import Locker
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
        store: Store,
        locker: Locker | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.store = store
        #: the store, if it hashes the bytes as they arrive (the digest is then
        #: known when the upload finishes: its data need not be read again)
        self.hashing = store if isinstance(store, HashingStore) else None
        self.locker = locker
        #: per thread, the metadata ``pre_create`` last validated and the
        #: result, which ``post_create`` of the same creation reuses
        self._validated = threading.local()
        #: what ``pre_create`` made of the metadata of uploads it let in, for
        #: their finalization (:meth:`post_finish`) in this process
        self._targets: dict[_MetadataKey, contract.ReportUpload] = {}

    def pre_create(self, info: UploadInfo) -> None:
        try:
            target = validate_for_settings(info.metadata, self.settings)
        except contract.ContractError as error:
            raise HookRejection(400, _refusal(info, error)) from None
        project = self.settings.projects[target.project]
        info.size_limit = project.max_upload_size
        info.size_limit_rule = (
            f"project {project.name}'s max_upload_size is {project.max_upload_size} bytes"
        )
        if info.is_final:
            self._check_partials(info, target)
        if not info.is_partial:
            info.metadata = {**info.metadata, **target.to_metadata()}
            self._validated.last = (info.metadata, target)
            if len(self._targets) >= KEPT_TARGETS:  # uploads never finished: start again
                self._targets.clear()
            self._targets[_metadata_key(info.metadata)] = target

    def _check_partials(self, info: UploadInfo, target: contract.ReportUpload) -> None:
        """A final upload joins only partial uploads created for the same
        upload: the same report metadata but the sha256 (which the partial
        uploads cannot know yet).  The tus layer has checked that they exist
        and belong to the same principal."""
        wanted = _report_metadata(target)
        for partial_id in info.partials:
            partial = self.store.get(partial_id)
            try:
                theirs = _report_metadata(validate_for_settings(partial.metadata, self.settings))
            except contract.ContractError as error:
                raise HookRejection(
                    400,
                    f"Upload-Concat: partial upload {partial_id} names no report it may be "
                    f"joined into ({error}); {_JOIN_RULE}",
                ) from None
            differing = sorted(
                key for key in wanted.keys() | theirs.keys() if wanted.get(key) != theirs.get(key)
            )
            if differing:
                what = ", ".join(
                    f"{key} {theirs.get(key, '')!r} (not {wanted.get(key, '')!r})"
                    for key in differing
                )
                raise HookRejection(
                    400,
                    f"Upload-Concat: partial upload {partial_id} was created with {what}; "
                    f"{_JOIN_RULE}",
                )

    def post_create(self, info: UploadInfo) -> None:
        if info.is_partial:
            return
        last = getattr(self._validated, "last", None)
        self._validated.last = None
        if last is not None and last[0] is info.metadata:
            target = last[1]  # the metadata pre_create validated and completed
        else:
            target = validate_for_settings(info.metadata, self.settings)  # as pre_create did
        with self.database.transaction(write=True) as connection:
            ledger.insert_upload(connection, _upload_row(info, target))

    def post_finish(self, info: UploadInfo) -> dict[str, str]:
        if info.is_partial:
            return {}
        hashing = self.hashing
        # The validation's outcome depends on the metadata and the settings
        # alone: what pre_create made of the same metadata in this process
        # (the same settings) is what validating it again would give.
        target = self._targets.pop(_metadata_key(info.metadata), None)
        try:
            url = finalize_upload(
                self.database,
                self.settings,
                info,
                self.store.data_path(info.id),
                known_sha256=hashing.known_sha256(info.id) if hashing else None,
                target=target,
            )
        except FinalizeError as error:
            self._mark_failed(info.id, str(error))
            raise HookRejection(error.status, str(error)) from None
        finally:
            if hashing is not None:
                hashing.forget_sha256(info.id)
        # Flask is imported here: the hooks serve ``cleanup`` too, which has
        # no requests and would otherwise import it (about 0.07 s of CPU).
        from flask import has_request_context, request

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


#: Validated metadata kept for finalizations at most (about 1 KiB each):
#: beyond it, those of uploads never finished are let go, all at once.
KEPT_TARGETS = 1024

_MetadataKey = frozenset[tuple[str, str | None]]


def _metadata_key(metadata: Mapping[str, str | None]) -> _MetadataKey:
    return frozenset(metadata.items())


_JOIN_RULE = (
    "a final upload joins only partial uploads created with its report metadata "
    "(all of it but sha256) by the same principal"
)


def _refusal(info: UploadInfo, error: contract.ContractError) -> str:
    """The refusal of an upload's metadata, in the same words for a partial
    upload (it carries its final upload's report metadata and is checked as
    it is); a partial upload without any is told why it needs it (a tus
    client that sends no metadata with partial uploads unless told)."""
    if info.is_partial and contract.KEY_PROJECT not in info.metadata:
        return (
            f"{error} (a partial upload, Upload-Concat: partial, carries the report metadata "
            "of its final upload and is checked and authorized as it is)"
        )
    return str(error)


def _report_metadata(target: contract.ReportUpload) -> dict[str, str]:
    """What identifies an upload's destination: its metadata but the sha256."""
    metadata = target.to_metadata()
    metadata.pop(contract.KEY_SHA256, None)
    return metadata


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
