"""Finalization of a finished upload: verify, publish, record.

Order of work, chosen so a crash anywhere leaves something recovery can finish:

1. under the report's lock, one transaction says whether the upload
   is already done (published: nothing to do; failed: the same refusal
   again) and where the report lives (an upload re-sent after it completed
   is answered from its row without the lock), and gives the upload its
   place in the order of finalizations, the first time (:func:`.ledger.take_place`);
2. the payload is verified (whole-payload SHA-256) and published: a file by
   an atomic rename, an archive by extraction into a private staging
   directory, checks, and one swap of the report directory;
3. then, in one short durable transaction, the event, report and file rows,
   the report's totals and the upload's state are written (Core statements,
   :mod:`.ledger`).  Only then does the tus layer mark the upload completed.

A crash before 3 leaves the upload "receiving": finalizing it again (crash
recovery at start-up, or the client re-sending its last PATCH) publishes the
same bytes to the same names and writes the same rows, except that it never
goes backwards: the upload keeps the place its first finalization took, and
the paths that a later upload of the same report published meanwhile (which
recorded them as superseded for this one before publishing them, see
:mod:`.supersession`) are left as the later upload made them; the rest is
published and recorded, and the upload ends ``published``.  No database
transaction is open while files are extracted, so a long archive does not
hold SQLite's write lock.

Durability (unless the fsync policy is ``never``): the record's transaction
is durable (:meth:`.Database.transaction`) before the upload is marked
completed, and with it every earlier commit, the place included.  The place
itself is committed without waiting for the disk (one flush less per upload):
a kill loses nothing, but a power loss in the moment between publishing and
recording can take it with the record, and the upload, finalized again, then
takes a new place.  The paths that later uploads record as taken from an
upload are durable before those uploads publish them.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dqrxfer import contract, faults

from ..config import ProjectConfig, Settings
from ..db import Database
from ..db.models import utcnow
from ..tus import UploadInfo
from . import ledger, publish
from .archive import ArchiveRefused, extract_archive
from .invariants import TreeInvariantBroken
from .ledger import PublishedFile
from .staging import Staging
from .supersession import Claim, drop_superseded
from .validation import validate_for_settings

log = logging.getLogger("dqrxfer.reports")

#: HTTP status of a finished upload whose content cannot be published.
UNPROCESSABLE = 422


class FinalizeError(Exception):
    """The payload cannot be published; ``status`` and the message go to the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PublishResult:
    """What one publication changed in a report."""

    files: list[PublishedFile]
    removed: list[str]
    payload_sha256: str
    #: paths of the payload left alone: later uploads published them
    superseded: list[str] = field(default_factory=list)


def finalize_upload(
    database: Database,
    settings: Settings,
    info: UploadInfo,
    data_path: Path,
    known_sha256: str | None = None,
    target: contract.ReportUpload | None = None,
) -> str:
    """Publish a finished upload and return its report's URL (idempotent).

    ``known_sha256``: the payload's SHA-256 if it was computed while the bytes
    arrived (the tus store's running digest); otherwise it is computed here.
    ``target``: what validating ``info.metadata`` against ``settings`` gives,
    if that was done already (at the upload's creation, in this process);
    otherwise it is validated here.
    """
    if info.completed:  # a re-sent last PATCH: the first answer again, without the lock
        with database.transaction() as connection:
            url = _previous_answer(ledger.upload_outcome(connection, info.id))
        if url is not None:
            return url
    if target is None:
        try:
            target = validate_for_settings(info.metadata, settings)
        except contract.ContractError as error:
            with database.transaction() as connection:
                url = _previous_answer(ledger.upload_outcome(connection, info.id))
            if url is not None:
                return url
            raise FinalizeError(UNPROCESSABLE, str(error)) from None
    project = settings.projects[target.project]
    staging = Staging(project.staging, project.reports_root)
    staging.ensure()
    durable = settings.durable
    with staging.report_lock(target.report_relpath):
        with database.transaction(write=True) as connection:
            start = ledger.finalization_start(
                connection, info.id, target.graceid, project.name, target.site, target.revision
            )
            url = _previous_answer(start.outcome)
            if url is not None:
                return url
            place = ledger.take_place(
                connection,
                info.id,
                start.outcome,
                target.graceid,
                project.name,
                target.site,
                target.revision,
                cut=start.cut,
            )
        existing = start.report_path
        relpath = existing if existing is not None else target.report_relpath
        report_dir = project.reports_root / relpath
        claim = Claim(database, place, durable)
        if target.kind == contract.KIND_TAR:
            outcome = _publish_archive(
                settings, project, staging, target, info, data_path, report_dir, claim, known_sha256
            )
        else:
            outcome = _publish_file(project, target, data_path, report_dir, claim, known_sha256)
        faults.point("after-publish")
        return _record(database, project, target, info, relpath, outcome, place, durable)


def _previous_answer(outcome: ledger.UploadOutcome | None) -> str | None:
    """The report URL of an upload already published, the refusal of one
    already refused (raised), or None: it is still to be finalized."""
    if outcome is None:
        return None
    if outcome.state == "published" and outcome.report_url is not None:
        return outcome.report_url
    if outcome.state == "failed":
        raise FinalizeError(UNPROCESSABLE, outcome.error or "this upload was refused")
    return None


def _sha256_mismatch(digest: str, expected: str) -> FinalizeError:
    return FinalizeError(
        UNPROCESSABLE,
        f"sha256: the received payload hashes to {digest}, not {expected} "
        "as the metadata says; nothing was published",
    )


def _publish_file(
    project: ProjectConfig,
    target: contract.ReportUpload,
    data_path: Path,
    report_dir: Path,
    claim: Claim,
    known_sha256: str | None = None,
) -> PublishResult:
    digest = known_sha256 or publish.sha256_of(data_path)
    if target.sha256 is not None and digest != target.sha256:
        raise _sha256_mismatch(digest, target.sha256)
    relpath = f"{target.subdir}/{target.filename}" if target.subdir else target.filename
    if claim.superseded.covers(relpath):
        return PublishResult([], [], digest, [relpath])
    try:
        publish.check_file_target(report_dir, relpath)
    except publish.PublishConflict as error:
        field = contract.KEY_SUBDIR if error.path != relpath else contract.KEY_FILENAME
        raise FinalizeError(UNPROCESSABLE, f"{field}: {error}; nothing was published") from None
    except TreeInvariantBroken as error:
        raise FinalizeError(
            UNPROCESSABLE, f"{contract.KEY_FILENAME}: {error}; nothing was published"
        ) from None
    target_dir = report_dir / target.subdir if target.subdir else report_dir
    claim.paths([relpath])
    # New directories are made durable with the file's name, all at once.
    new_directories = publish.make_dirs(target_dir, project.reports_root, durable=False)
    publish.publish_file(data_path, target_dir / target.filename, new_directories, claim.durable)
    size = data_path.stat().st_size
    return PublishResult([PublishedFile(relpath, size, digest)], [], digest)


def _publish_archive(
    settings: Settings,
    project: ProjectConfig,
    staging: Staging,
    target: contract.ReportUpload,
    info: UploadInfo,
    data_path: Path,
    report_dir: Path,
    claim: Claim,
    known_sha256: str | None = None,
) -> PublishResult:
    prefix = f"{target.subdir}/" if target.subdir else ""
    with staging.workdir(info.id) as work:
        extract_root = work / "extract"
        extract_root.mkdir()
        refused: ArchiveRefused | None = None
        # The whole-payload digest is computed beside the extraction (hashlib
        # releases the GIL), so verification costs no extra wall-clock time.
        # (Unless it was computed while the bytes arrived.)
        with ThreadPoolExecutor(1, thread_name_prefix="dqrxfer-sha256") as pool:
            hashing = None if known_sha256 else pool.submit(publish.sha256_of, data_path)
            try:
                staged = extract_archive(data_path, extract_root, project.tar)
            except ArchiveRefused as error:
                refused = error
            digest = known_sha256 or (hashing.result() if hashing else "")
        if target.sha256 is not None and digest != target.sha256:
            raise _sha256_mismatch(digest, target.sha256)
        superseded: list[str] = []
        try:
            if refused is not None:
                raise refused
            superseded = drop_superseded(staged, prefix, claim.superseded)
            if superseded and not staged.files and not staged.links:
                return PublishResult([], [], digest, superseded)
            publish.check_overlay(report_dir, target.subdir, staged)
        except ArchiveRefused as error:
            raise FinalizeError(UNPROCESSABLE, f"{error}; nothing was published") from None
        except publish.PublishConflict as error:
            raise FinalizeError(UNPROCESSABLE, f"archive: {error}; nothing was published") from None
        faults.point("after-extract")
        try:
            with claim.publishing([prefix + name for name in [*staged.files, *staged.links]]):
                publish.make_dirs(report_dir.parent, project.reports_root, settings.durable)
                publish.publish_tree(
                    staged, report_dir, target.subdir, work, durable=settings.durable
                )
        except TreeInvariantBroken as error:
            raise FinalizeError(UNPROCESSABLE, f"archive: {error}; nothing was published") from None
    files = [
        PublishedFile(prefix + name, entry.size, entry.sha256)
        for name, entry in sorted(staged.files.items())
    ]
    return PublishResult(files, [prefix + name for name in staged.links], digest, superseded)


def _record(
    database: Database,
    project: ProjectConfig,
    target: contract.ReportUpload,
    info: UploadInfo,
    relpath: str,
    outcome: PublishResult,
    place: ledger.Place,
    durable: bool,
) -> str:
    change = ledger.ReportChange(
        graceid=target.graceid,
        project=project.name,
        site=target.site,
        revision=target.revision,
        path=relpath,
        url=project.report_url(relpath),
        files=outcome.files,
        removed=outcome.removed,
        upload_id=info.id,
        principal=info.owner,
        when=utcnow(),
    )
    publication = ledger.Publication(
        change,
        upload_id=info.id,
        payload_sha256=outcome.payload_sha256,
        clear_superseded=bool(place.superseded),
    )
    with database.transaction(write=True, durable=durable) as connection:
        url = ledger.record_publication(connection, publication)
    if outcome.superseded:
        log.info(
            "upload %s left %d path(s) to later uploads: %s",
            info.id,
            len(outcome.superseded),
            ", ".join(outcome.superseded[:10]),
        )
    log.info(
        "published upload %s into %s/%s: %d file(s)",
        info.id,
        project.name,
        relpath,
        len(outcome.files),
    )
    return url
