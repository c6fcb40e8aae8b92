"""Uploading into a report the server already has: compare file by file, send what differs.

The links API lists each report's files with their size and sha256
(``GET /api/v1/events/<graceid>/reports?files=1``).  A local file is *the
same* as the server's when the server has a file of that path (relative to
the report directory), of that size and with that sha256; it is *new* when
the server has no file of that path, and it *replaces* the server's file
otherwise.  A local file is hashed only when the server has a file of the
same path and size: anything else differs whatever its hash.  Files the
server has and the local side lacks are left alone (an upload adds and
replaces files, it never removes any), so they make no difference.

A plain file is skipped when it is the same; a packed directory is narrowed
to its new and replacing files (:meth:`DirectoryPayload.only`), or skipped
when none is left.  A tar archive given as a file is sent as it is: its
members are not compared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from . import contract
from .errors import RefusedError, TransientError, UsageError
from .packing import DirectoryPayload
from .planning import PlannedUpload
from .retry import Retrier
from .transport import NotAServerError, check_api_response, describe_error

log = logging.getLogger("dqr-xfer")


@dataclass(frozen=True)
class ServerFile:
    """One file of a report as the server lists it."""

    path: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class ServerReport:
    """A report the server has, with its files (None: the server did not list them)."""

    url: str | None
    files: dict[str, ServerFile] | None


@dataclass(frozen=True)
class LocalFile:
    """A file about to be sent: its path in the report, its size, where it is on disk."""

    relpath: str
    size: int
    path: Path


@dataclass
class Comparison:
    """The local files of one payload against the server's copy of the report."""

    same: list[LocalFile] = field(default_factory=list)
    new: list[LocalFile] = field(default_factory=list)
    replacing: list[tuple[LocalFile, ServerFile]] = field(default_factory=list)

    @property
    def differing(self) -> int:
        """How many local files are missing on the server or differ from its copy."""
        return len(self.new) + len(self.replacing)

    def add(self, other: Comparison) -> None:
        self.same += other.same
        self.new += other.new
        self.replacing += other.replacing


def event_reports(
    session: requests.Session,
    server: str,
    graceid: str,
    retrier: Retrier,
    site: str | None = None,
    files: bool = False,
) -> list[dict[str, Any]]:
    """The server's reports of one event (links API), retried like any request;
    ``site``: that site's only; ``files``: each with the list of its files."""
    url = f"{server.rstrip('/')}/api/v1/events/{graceid}/reports"
    query = {"site": site, "files": "1" if files else None}

    def attempt() -> list[dict[str, Any]]:
        try:
            response = session.get(url, params={k: v for k, v in query.items() if v})
        except requests.RequestException as error:
            log.debug("GET %s: %r", url, error)
            raise TransientError(describe_error(error, url)) from error
        body = check_api_response(response, server, "GET")
        reports = body.get("reports") if isinstance(body, dict) else None
        if not isinstance(reports, list):
            raise TransientError(f"{server}: no list of the reports of {graceid} in its answer")
        return reports

    return retrier.call(attempt)


def as_server_report(entry: dict[str, Any]) -> ServerReport:
    """One entry of the links API's list of reports."""
    listed = entry.get("files")
    files = None
    if isinstance(listed, list):
        try:
            files = {
                str(item["path"]): ServerFile(
                    str(item["path"]), int(item["size"]), item.get("sha256")
                )
                for item in listed
            }
        except (KeyError, TypeError, ValueError):
            log.debug("the server's list of files is not understood: %.200s", listed)
            files = None  # compared with nothing: everything is sent
    return ServerReport(entry.get("url"), files)


def find_report(
    entries: Iterable[dict[str, Any]], project: str, site: str, revision: int
) -> ServerReport | None:
    """The entry for this project, site and revision among ``entries``, if any."""
    for entry in entries:
        if (
            str(entry.get("project", "")).lower() == project.lower()
            and entry.get("site") == site
            and entry.get("revision") == revision
        ):
            return as_server_report(entry)
    return None


def server_report(
    session: requests.Session, server: str, report: contract.ReportUpload, retrier: Retrier
) -> ServerReport | None:
    """The server's copy of ``report`` with its files, None when it has none.

    A query the server refuses (a site it does not take) means it has no
    such report: the upload is refused then, in the words of the field the
    user gave (``uploader``, not the query's ``site``)."""
    try:
        entries = event_reports(
            session, server, report.graceid, retrier, site=report.site, files=True
        )
    except RefusedError as error:
        log.debug("no comparison with the server's copy: %s", error)
        return None
    return find_report(entries, report.project, report.site, report.revision)


def local_files(planned: PlannedUpload) -> list[LocalFile] | None:
    """The files ``planned`` puts into the report, None for a tar archive given
    as a file (its members are known only once the server unpacks it)."""
    payload, subdir = planned.payload, planned.report.subdir
    prefix = f"{subdir}/" if subdir else ""
    if isinstance(payload, DirectoryPayload):
        return [
            LocalFile(prefix + member.name, member.size, member.path)
            for member in payload.members
            if not member.is_dir
        ]
    if payload.kind == contract.KIND_FILE:
        return [LocalFile(prefix + payload.filename, payload.size, payload.source)]
    return None


def may_skip(planned: PlannedUpload, remote: ServerReport | None) -> bool:
    """Whether comparing ``planned`` with ``remote`` (the server's copy) could
    skip or leave out any of its files: only a file whose path and size the
    server has (with a sha256) can be the same (see :func:`compare`)."""
    if remote is None or remote.files is None:
        return False
    files = local_files(planned)
    if files is None:
        return False
    for file in files:
        theirs = remote.files.get(file.relpath)
        if theirs is not None and theirs.size == file.size and theirs.sha256 is not None:
            return True
    return False


def compare(
    local: Iterable[LocalFile],
    remote: dict[str, ServerFile],
    digest: Callable[[LocalFile], str],
) -> Comparison:
    """Sort the local files into same, new and replacing; ``digest`` is asked
    only for a file whose path and size the server has.  A file that cannot
    be read is a :class:`UsageError` naming it."""
    comparison = Comparison()
    for file in local:
        theirs = remote.get(file.relpath)
        if theirs is None:
            comparison.new.append(file)
            continue
        same = False
        if theirs.size == file.size and theirs.sha256 is not None:
            try:
                same = theirs.sha256 == digest(file)
            except OSError as error:
                raise UsageError(f"{file.path}: {error.strerror}") from None
        if same:
            comparison.same.append(file)
        else:
            comparison.replacing.append((file, theirs))
    return comparison


def narrowed(planned: PlannedUpload, comparison: Comparison) -> PlannedUpload | None:
    """What is left to send of ``planned``: all of it, only the files that
    differ (a directory), or nothing (None)."""
    if not comparison.same:
        return planned
    if not comparison.differing:
        return None
    payload = planned.payload
    if not isinstance(payload, DirectoryPayload):
        return planned
    prefix = f"{planned.report.subdir}/" if planned.report.subdir else ""
    names = [file.relpath.removeprefix(prefix) for file in comparison.new]
    names += [file.relpath.removeprefix(prefix) for file, _ in comparison.replacing]
    return PlannedUpload(payload.only(names), planned.report)


def log_replacements(report_name: str, comparison: Comparison, dry_run: bool = False) -> None:
    """A warning for each server file that the upload replaces, with both sizes."""
    verb = "would replace" if dry_run else "replacing"
    for file, theirs in comparison.replacing:
        log.warning(
            "%s/%s: %s the server's copy (%d bytes) with a different one (%d bytes)",
            report_name,
            file.relpath,
            verb,
            theirs.size,
            file.size,
        )


def log_skipped(report_name: str, count: int, dry_run: bool = False) -> None:
    """The one line per report saying what was not sent again."""
    if count:
        verb = "would skip" if dry_run else "skipped"
        plural = "file" if count == 1 else "files"
        log.info("%s: %s %d %s already on the server", report_name, verb, count, plural)


def server_vocabulary(
    session: requests.Session, server: str, retrier: Retrier
) -> tuple[list[str], list[str]]:
    """The projects and sites the server takes, from its OpenAPI document
    (public, like the links API): the enums of the ``project`` and ``site``
    parameters of ``GET /api/v1/reports``."""
    url = f"{server.rstrip('/')}/api/v1/openapi.json"

    def attempt() -> tuple[list[str], list[str]]:
        try:
            response = session.get(url)
        except requests.RequestException as error:
            log.debug("GET %s: %r", url, error)
            raise TransientError(describe_error(error, url)) from error
        body = check_api_response(response, server, "GET")
        try:
            parameters = body["paths"]["/api/v1/reports"]["get"]["parameters"]
            enums = {p["name"]: p["schema"]["enum"] for p in parameters if "enum" in p["schema"]}
            return [str(p) for p in enums["project"]], [str(s) for s in enums["site"]]
        except (KeyError, TypeError) as error:
            log.debug("%s: no projects and sites in %s: %r", server, url, error)
            raise NotAServerError(server, "its API description is not dqrxfer's") from None

    return retrier.call(attempt)


def check_target(
    session: requests.Session, server: str, report: contract.ReportUpload, retrier: Retrier
) -> None:
    """Refuse (:class:`UsageError`) a project or site the server does not take,
    as the upload would be refused, without uploading."""
    projects, sites = server_vocabulary(session, server, retrier)
    if report.project.lower() not in {project.lower() for project in projects}:
        raise UsageError(
            f"--project: {server} has no project {report.project!r} "
            f"(its projects: {', '.join(projects)})"
        )
    if report.site not in sites:
        raise UsageError(
            f"--uploader: {server} knows no site {report.site!r} (its sites: {', '.join(sites)})"
        )
