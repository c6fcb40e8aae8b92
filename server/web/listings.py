"""The report tree's own routes: ``/reports/<project>/<path>``.

Files are served by the app only in the embedded default (``serve_reports``;
in production the web server in front serves them, see ``ops/``).  Directory
URLs of an event (``<graceid>_dir/``) and of a report
(``<graceid>_dir/<graceid>_<site>_<revision>/``) are answered in every mode:
a report's own ``index.html`` where it has one (embedded default), else a
listing generated from the database, so that no link of the API or of the
pages ends in a 404.  The front ends pass exactly these URLs to the app when
the report has no ``index.html``.

The listings are the app's own HTML, but they live under ``/reports/`` and
get its headers like everything there (:mod:`..untrusted`: sandboxed, no
cookies).  Every name in them comes from an uploader: the template escapes
it, and links are relative URLs with each path component percent-encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from flask import Blueprint, Response, abort, redirect, render_template, request, send_file
from sqlalchemy import select

from dqrxfer import contract
from dqrxfer.progress import human_bytes

from ..auth import public
from ..config import Settings
from ..db import Event, Report, ReportFile
from ..reports.serving import servable_file
from ..services import services

blueprint = Blueprint("reports", __name__)

EVENT_SUFFIX = "_dir"


@dataclass(frozen=True)
class ListedFile:
    """One row of a report's listing."""

    name: str
    href: str
    size: int
    sha256: str | None
    published: datetime


@dataclass(frozen=True)
class ListedReport:
    """One row of an event's listing."""

    name: str
    href: str
    site: str
    revision: int
    file_count: int
    size: int
    updated: datetime


def _settings() -> Settings:
    return services().settings


def _href(relpath: str) -> str:
    """A relative link to ``relpath`` (``/``-separated), every component encoded."""
    return "/".join(quote(part, safe="") for part in relpath.split("/"))


def _page(html: str) -> Response:
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    response.add_etag()
    response.make_conditional(request)
    return response


def _graceid_of_event_dir(name: str) -> str | None:
    if not name.endswith(EVENT_SUFFIX):
        return None
    try:
        return contract.validate_graceid(name.removesuffix(EVENT_SUFFIX))
    except contract.ContractError:
        return None


def _event_listing(project: str, graceid: str) -> Response | None:
    with services().database.session() as session:
        rows = session.execute(
            select(Report)
            .join(Event, Event.id == Report.event_id)
            .where(Event.graceid == graceid, Report.project == project)
            .order_by(Report.site, Report.revision)
        ).scalars()
        reports = [
            ListedReport(
                name=report.path.rsplit("/", 1)[-1],
                href=_href(report.path.rsplit("/", 1)[-1]) + "/",
                site=report.site,
                revision=report.revision,
                file_count=report.file_count,
                size=report.total_bytes,
                updated=report.updated,
            )
            for report in rows
        ]
    if not reports:
        return None
    html = render_template("listing_event.html", project=project, graceid=graceid, reports=reports)
    return _page(html)


def _report_listing(project: str, relpath: str) -> Response | None:
    with services().database.session() as session:
        report = session.execute(
            select(Report).where(Report.project == project, Report.path == relpath)
        ).scalar_one_or_none()
        if report is None:
            return None
        graceid = report.event.graceid
        files = [
            ListedFile(
                name=row.relpath,
                href=_href(row.relpath),
                size=row.size,
                sha256=row.sha256,
                published=row.published,
            )
            for row in session.execute(
                select(ReportFile)
                .where(ReportFile.report_id == report.id)
                .order_by(ReportFile.relpath)
            ).scalars()
        ]
        name = relpath.rsplit("/", 1)[-1]
        html = render_template(
            "listing_report.html",
            project=project,
            graceid=graceid,
            name=name,
            site=report.site,
            revision=report.revision,
            size=report.total_bytes,
            updated=report.updated,
            files=files,
        )
    return _page(html)


def _listing(project: str, parts: list[str]) -> Response | None:
    """The generated page of the directory ``parts`` names, or None."""
    graceid = _graceid_of_event_dir(parts[0])
    if graceid is None or len(parts) > 2:
        return None
    if len(parts) == 1:
        return _event_listing(project, graceid)
    try:
        contract.parse_report_dirname(parts[1], _settings().sites)
    except contract.ContractError:
        return None
    return _report_listing(project, "/".join(parts))


@blueprint.get("/reports/<project>/<path:path>")
@public
def report_path(project: str, path: str) -> Response:
    """A report file (embedded default), or an event's or a report's directory."""
    settings = _settings()
    config = settings.projects.get(project)
    if config is None:
        abort(404)
    if any(part.startswith(".") for part in path.split("/")):
        abort(404)  # staging areas and dot files are never served
    directory = path.endswith("/")
    parts = path.rstrip("/").split("/")
    if settings.serve_reports:
        # Only from inside the report the path names, links followed (see .reports.serving).
        wanted = path + "index.html" if directory else path
        real = servable_file(config.reports_root, wanted)
        if real is not None:
            return send_file(real, download_name=wanted.rsplit("/", 1)[-1])
    if not directory:
        if len(parts) <= 2 and _listing(project, parts) is not None:
            return redirect(request.path + "/", 301)  # type: ignore[return-value]
        abort(404)
    listing = _listing(project, parts)
    if listing is None:
        abort(404)
    return listing


@blueprint.app_template_filter("iec_bytes")
def iec_bytes(count: int) -> str:
    """Sizes as ``dqr-upload`` writes them: IEC binary units, one decimal."""
    return human_bytes(count)
