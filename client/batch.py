"""Uploading a whole tree of reports: find them, ask the server, send what is missing.

A report tree holds ``<graceid>_dir/<graceid>_<site>_<revision>/`` directories
(the layout of the central report tree, and of the sites' own).
:func:`find_reports` walks one or more roots for them; :class:`BatchUploader`
asks the links API (``GET /api/v1/events/<graceid>/reports``, once per
event) which of them the server already has, and sends each missing report
as one packed directory (``kind=tar``), several at once with ``jobs``.

"Already on the server" means: the server lists a report of the same project,
site and revision.  Its files are compared with the local ones, file by file
(:mod:`~dqrxfer.reupload`: path, size, and sha256 where path and size
match).  Without ``update`` a report whose local copy has new or different
files stays as it is and says so (``on server (differs locally: N files;
--update to send)``); with ``update`` only those files are sent (files only
on the server stay), so a second run finds nothing to send.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from . import contract
from .errors import DqrxferError, TransientError, UsageError
from .hashcache import HashCache
from .hints import UnknownProjectError
from .packing import DirectoryPayload
from .progress import NullProgress, Progress
from .resume import ResumeStore
from .retry import Retrier
from .reupload import (
    Comparison,
    check_target,
    compare,
    event_reports,
    find_report,
    local_files,
    log_replacements,
    log_skipped,
    narrowed,
)
from .session import SessionFactory, make_session
from .transport import describe_error
from .upload import (
    PlannedUpload,
    ReportTarget,
    ReportUploader,
    UploadOptions,
    UploadResult,
    describe,
)

log = logging.getLogger("dqr-xfer")

#: What happened to one report.
UPLOADED, PRESENT, WOULD_UPLOAD, FAILED, CHANGED = (
    "uploaded",
    "on server",
    "would upload",
    "failed",
    "changed",
)


@dataclass(frozen=True)
class LocalReport:
    """A report directory found on disk."""

    path: Path
    graceid: str
    site: str
    revision: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.site, self.revision)


def find_reports(
    roots: Iterable[Path], sites: Iterable[str] = contract.DEFAULT_SITES
) -> list[LocalReport]:
    """Every ``<graceid>_dir/<graceid>_<site>_<revision>/`` under ``roots``, sorted.

    A root may itself be a report directory or an event directory.  Symbolic
    links to directories are not followed; directories whose names break the
    contract are passed over (a debug line says why).
    """
    sites = tuple(sites)
    found: dict[Path, LocalReport] = {}

    def consider(path: Path) -> LocalReport | None:
        parent = path.parent.name
        if not parent.endswith("_dir"):
            return None
        try:
            graceid, site, revision = contract.parse_report_dirname(path.name, sites)
        except contract.ContractError as error:
            log.debug("not a report directory: %s (%s)", path, error)
            return None
        if parent != contract.event_dirname(graceid):
            log.debug("not a report directory: %s (its parent is not %s_dir)", path, graceid)
            return None
        return LocalReport(path, graceid, site, revision)

    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise UsageError(f"{root}: not a directory")
        resolved = root.resolve()
        report = consider(resolved)
        if report is not None:
            found[resolved] = LocalReport(root, report.graceid, report.site, report.revision)
            continue
        for directory, subdirs, _files in os.walk(root):
            keep = []
            for name in sorted(subdirs):
                path = Path(directory) / name
                report = consider(path)
                if report is not None:
                    found.setdefault(path.resolve(), report)
                elif not name.startswith("."):
                    keep.append(name)  # descend, but never into a report
            subdirs[:] = keep
    return sorted(found.values(), key=lambda r: (r.graceid, r.site, r.revision, str(r.path)))


@dataclass
class BatchItem:
    """One report of a batch and what became of it."""

    report: LocalReport
    status: str = ""
    planned: PlannedUpload | None = None
    result: UploadResult | None = None
    error: DqrxferError | None = None
    url: str | None = None
    seconds: float = 0.0
    #: the local files against the server's copy (None: not on the server)
    comparison: Comparison | None = None

    @property
    def shown_status(self) -> str:
        """The status as the summary table shows it."""
        differing = self.comparison.differing if self.comparison is not None else 0
        if self.status == PRESENT and differing:
            return f"{PRESENT} (differs locally: {differing} files; --update to send)"
        return self.status

    @property
    def exit_code(self) -> int:
        return self.error.exit_code if self.error is not None else 0

    @property
    def size(self) -> int | None:
        """The bytes sent or to send (None: nothing)."""
        if self.planned is None or self.status == PRESENT:
            return None
        return self.planned.payload.size


@dataclass
class BatchUploader:
    """Uploads the reports of a tree that the server does not have yet."""

    server: str
    project: str
    options: UploadOptions = field(default_factory=UploadOptions)
    session_factory: SessionFactory = make_session
    store: ResumeStore | None = None
    progress: Progress = field(default_factory=NullProgress)
    update: bool = False
    #: digests of local files from earlier runs
    hashes: HashCache = field(default_factory=HashCache)
    #: the server's refusal of the project, which ends the batch (see :meth:`run`)
    _project_refused: UnknownProjectError | None = field(default=None, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    def classify(self, reports: list[LocalReport], dry_run: bool = False) -> list[BatchItem]:
        """Ask the server about each event; return an item per report with its
        status set to :data:`PRESENT` (the server has every local file),
        :data:`CHANGED` (``update``: its new and different files are to be
        sent) or left empty (to upload)."""
        items = [BatchItem(report) for report in reports]
        session = self.session_factory()
        try:
            retrier = Retrier(self.options.retry, "comparing the reports with the server's")
            known: dict[str, list[dict[str, Any]]] = {}
            for item in items:
                graceid = item.report.graceid
                if graceid not in known:
                    known[graceid] = event_reports(
                        session, self.server, graceid, retrier, files=True
                    )
                remote = find_report(
                    known[graceid], self.project, item.report.site, item.report.revision
                )
                if remote is None:
                    continue
                item.url = remote.url
                planned = self._plan(item)
                item.status = PRESENT
                if planned is None:
                    # Whatever the local copy's trouble, the server has the report.
                    log.warning(
                        "%s: not compared with the server's copy: %s", item.report.path, item.error
                    )
                    item.error = None
                    continue
                files = local_files(planned)
                if files is None or remote.files is None:
                    continue
                try:
                    item.comparison = compare(
                        files, remote.files, lambda file: self.hashes.sha256(file.path)
                    )
                except DqrxferError as error:
                    log.warning(
                        "%s: not compared with the server's copy: %s", item.report.path, error
                    )
                    continue
                if item.comparison.differing and self.update:
                    log_replacements(item.report.path.name, item.comparison, dry_run)
                    log_skipped(item.report.path.name, len(item.comparison.same), dry_run)
                    item.planned = narrowed(planned, item.comparison)
                    item.status = CHANGED
        finally:
            session.close()
        return items

    def check_target(self, items: list[BatchItem]) -> None:
        """Refuse a project the server does not take (:class:`UsageError`),
        as the uploads would be refused, without uploading."""
        planned = next((item.planned for item in items if item.planned is not None), None)
        if planned is None:
            return
        session = self.session_factory()
        try:
            retrier = Retrier(self.options.retry, "asking the server what it takes")
            check_target(session, self.server, planned.report, retrier)
        finally:
            session.close()

    def log_in(self) -> None:
        """One authenticated request before the uploads (``GET /api/v1/ping``):
        a missing or expired Kerberos ticket ends the batch with one message,
        instead of the same message for every report."""
        from .auth import login

        session = self.session_factory()
        try:
            retrier = Retrier(self.options.retry, "log in")

            def attempt() -> None:
                try:
                    login(session, self.server)
                except requests.RequestException as error:
                    raise TransientError(describe_error(error, self.server)) from error

            retrier.call(attempt)
        finally:
            session.close()

    def _target(self, report: LocalReport) -> ReportTarget:
        return ReportTarget(self.project, report.graceid, report.site, report.revision)

    def _plan(self, item: BatchItem) -> PlannedUpload | None:
        if item.planned is None:
            try:
                payload = DirectoryPayload.pack(
                    item.report.path, self.options.follow_external_links
                )
                item.planned = PlannedUpload(payload, describe(payload, self._target(item.report)))
            except DqrxferError as error:
                item.error = error
                item.status = FAILED
                return None
        return item.planned

    def upload_one(self, item: BatchItem) -> BatchItem:
        if self._stop.is_set():
            return item  # the batch ends: left as it was
        planned = self._plan(item)
        if planned is None:
            log.error("%s: %s", item.report.path, item.error)
            return item
        uploader = ReportUploader(
            self.server,
            self._target(item.report),
            self.options,
            self.session_factory,
            self.store,
            self.progress,
        )
        started = time.monotonic()
        try:
            item.result = uploader.upload(planned)
            item.url = item.result.report_url
            item.status = UPLOADED
        except UnknownProjectError as error:
            # Every other report would be refused alike: one line says it (run).
            self._project_refused = error
            self._stop.set()
            item.error = error
            item.status = FAILED
        except DqrxferError as error:
            log.error("%s: %s", item.report.path, error)
            item.error = error
            item.status = FAILED
        item.seconds = time.monotonic() - started
        return item

    def run(
        self, reports: list[LocalReport], jobs: int = 1, dry_run: bool = False
    ) -> list[BatchItem]:
        """Classify the reports and send those the server lacks (or, with
        ``update``, their changed files); the server's refusal of the project
        stops the batch at once (:class:`UnknownProjectError`, raised after
        the uploads under way ended): one line instead of one per report."""
        items = self.classify(reports, dry_run)
        todo = [item for item in items if item.status in ("", CHANGED)]
        log.info(
            "%d report(s) found, %d already on the server, %d to upload",
            len(items),
            len(items) - len(todo),
            len(todo),
        )
        if dry_run:
            for item in todo:
                if self._plan(item) is not None:
                    item.status = WOULD_UPLOAD
            self.check_target(todo)
            return items
        if todo:
            self.log_in()
        if jobs <= 1 or len(todo) <= 1:
            for item in todo:
                self.upload_one(item)
        else:
            with ThreadPoolExecutor(min(jobs, len(todo)), thread_name_prefix="dqr-batch") as pool:
                list(pool.map(self.upload_one, todo))
        if self._project_refused is not None:
            raise self._project_refused
        return items


def summary_table(items: list[BatchItem]) -> str:
    """A plain-text table: one row per report, then the totals."""
    from .progress import human_bytes

    header = ("graceid", "site", "rev", "status", "size", "time", "url / error")
    rows = []
    for item in items:
        size = human_bytes(item.size) if item.size is not None else "-"
        seconds = f"{item.seconds:.1f}s" if item.status == UPLOADED else "-"
        detail = str(item.error) if item.error is not None else (item.url or "")
        rows.append(
            (
                item.report.graceid,
                item.report.site,
                str(item.report.revision),
                item.shown_status,
                size,
                seconds,
                detail,
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    counts: dict[str, int] = {}
    for item in items:
        counts[item.status] = counts.get(item.status, 0) + 1
    totals = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    lines.append(f"{len(items)} report(s): {totals}" if items else "no reports found")
    return "\n".join(lines)
