"""What is left to send: planned uploads compared with the server's copy.

Before a report's payloads are sent, the links API is asked what the server
has of the report (:mod:`~dqrxfer.reupload`): a file the server has with the
same sha256 is not sent again, a payload all of whose files are there is
skipped, and each file an upload would replace is warned about.  On a first
contact the server's capabilities (OPTIONS) are asked on a second connection
at the same time, and both connections are kept open for the first uploads
(:class:`~dqrxfer.session.WarmSessions`): the round trips before the first
byte overlap instead of adding up.  The first payload's upload may even be
created meanwhile and held at a gate (:class:`AdvanceUpload`,
:mod:`~dqrxfer.gate`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import requests

from . import contract
from .gate import Gate
from .hashcache import HashCache
from .hashing import EarlyScans
from .payload import FilePayload, Payload
from .planning import PlannedUpload, UploadOptions
from .retry import Retrier
from .reupload import (
    LocalFile,
    ServerReport,
    check_target,
    compare,
    local_files,
    log_replacements,
    log_skipped,
    may_skip,
    narrowed,
    server_report,
)
from .session import SessionFactory, WarmSessions

T = TypeVar("T")


def start_thread(work: Callable[[], T], name: str = "dqr-early") -> Future[T]:
    """``work`` running in a thread of its own; its result or error in the future."""
    future: Future[T] = Future()

    def run() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(work())
            except BaseException as error:
                future.set_exception(error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


@dataclass(frozen=True)
class Settlement:
    """What is left to send of some planned uploads (:meth:`Settler.settle`)."""

    todo: list[PlannedUpload]
    #: the paths not sent at all: the server has every file of theirs
    skipped: list[Path]
    #: the report's URL when the server has it already
    report_url: str | None


@dataclass
class AdvanceUpload(Generic[T]):
    """The first payload's upload, started before the comparison with the
    server's copy and held at ``gate`` (see :mod:`dqrxfer.gate`)."""

    item: PlannedUpload
    gate: Gate
    outcome: Future[T]

    def decide(self, remote: ServerReport | None) -> None:
        """Open the gate if ``remote`` cannot change the payload; else close it
        and wait until the upload made in advance is gone (the comparison
        may then hash the payload: nothing else may be using its pass)."""
        if not may_skip(self.item, remote):
            self.gate.open()
            return
        self.withdraw()

    def withdraw(self) -> None:
        """Close the gate (if still undecided) and wait for the upload to end."""
        self.gate.close()
        with contextlib.suppress(BaseException):
            self.outcome.result()


class Settler:
    """Compares planned uploads of one report with the server's copy.

    ``ask_capabilities`` asks the server's capabilities early on a session of
    its own and returns that session; ``warm`` receives the sessions whose
    connections the comparison opened; ``scans`` and ``hashes`` are the
    uploader's passes over payloads and its digests of local files from
    earlier runs, so that a file hashed for the comparison is not hashed
    again for its upload.
    """

    def __init__(
        self,
        server: str,
        options: UploadOptions,
        session_factory: SessionFactory,
        warm: WarmSessions,
        ask_capabilities: Callable[[], requests.Session],
        scans: EarlyScans,
        hashes: HashCache,
    ) -> None:
        self.server = server
        self.options = options
        self.session_factory = session_factory
        self.warm = warm
        self.ask_capabilities = ask_capabilities
        self.scans = scans
        self.hashes = hashes

    def settle(
        self,
        planned: list[PlannedUpload],
        dry_run: bool = False,
        force: bool = False,
        advance: AdvanceUpload[T] | None = None,
    ) -> Settlement:
        """Compare ``planned`` with the server's copy of the report, file by
        file (:mod:`~dqrxfer.reupload`): drop what the server has with the
        same sha256, warn about each file an upload would replace, and say in
        one line how many files were skipped.  A plain file whose path and
        size the server has is hashed by the pass its upload would use.

        ``dry_run``: first refuse a project or site the server does not take
        (as the upload would be refused), and word the lines as what would
        happen.  ``force``: compare nothing, send everything."""
        if not planned or (force and not dry_run):
            return Settlement(list(planned), [], None)
        report = planned[0].report
        name = contract.report_dirname(report.graceid, report.site, report.revision)
        remote = self._ask_server(planned[0], name, dry_run, force, advance)
        if remote is None or remote.files is None:
            return Settlement(list(planned), [], None)
        return self._narrow(planned, remote, name, dry_run)

    def _ask_server(
        self,
        first: PlannedUpload,
        name: str,
        dry_run: bool,
        force: bool,
        advance: AdvanceUpload[T] | None,
    ) -> ServerReport | None:
        """The server's copy of the report (None if asked not to compare),
        with the capabilities asked at the same time on a second connection
        (not on a dry run); both connections are kept warm for the uploads."""
        asking = None if dry_run else start_thread(self.ask_capabilities, "dqr-options")
        session = self.session_factory()
        try:
            if dry_run:
                checking = Retrier(self.options.retry, f"{name} (asking the server what it takes)")
                check_target(session, self.server, first.report, checking)
            comparing = Retrier(self.options.retry, f"{name} (comparing with the server's copy)")
            remote = None if force else server_report(session, self.server, first.report, comparing)
            if advance is not None:
                advance.decide(remote)
        except BaseException:
            session.close()
            if asking is not None:
                with contextlib.suppress(BaseException):
                    asking.result().close()
            raise
        if asking is None:
            session.close()
            return remote
        try:
            asked = asking.result()
        except BaseException:
            session.close()
            raise
        # The links API's connection carries the first upload.
        self.warm.keep(asked, session)
        return remote

    def _narrow(
        self, planned: list[PlannedUpload], remote: ServerReport, name: str, dry_run: bool
    ) -> Settlement:
        """``planned`` without what ``remote`` has already."""
        assert remote.files is not None
        algorithm = "crc32" if self.options.checksums else None
        todo: list[PlannedUpload] = []
        skipped: list[Path] = []
        skipped_files = 0
        for item in planned:
            files = local_files(item)
            if files is None:
                todo.append(item)
                continue
            payload = item.payload

            def digest(file: LocalFile, payload: Payload = payload) -> str:
                if not (isinstance(payload, FilePayload) and file.path == payload.source):
                    return self.hashes.sha256(file.path)
                known = self.hashes.get(file.path)
                if known is None:  # the pass the upload uses, remembered for next time
                    known = self.scans.sha256(payload, algorithm)
                    self.hashes.put(file.path, payload.stamp, known)
                return known

            comparison = compare(files, remote.files, digest)
            log_replacements(name, comparison, dry_run)
            skipped_files += len(comparison.same)
            left = narrowed(item, comparison)
            if left is None:
                self.scans.drop(payload)
                skipped.append(payload.source)
            else:
                todo.append(left)
        log_skipped(name, skipped_files, dry_run)
        if not todo:
            self.warm.close()
        return Settlement(todo, skipped, remote.url)
