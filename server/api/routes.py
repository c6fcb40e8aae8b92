"""Read-only JSON endpoints used by clients and report pages.

Decision: a valid graceid that has no reports (yet) is ``200`` with an empty
list, not 404: report pages poll for events whose reports are still coming.
An invalid graceid is ``400`` with a message naming the rule.
"""

from __future__ import annotations

import time
from datetime import datetime
from urllib.parse import urlencode, urljoin

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from sqlalchemy.engine import Connection

from dqrxfer import __version__

from ..auth import current_principal, public
from ..config import Settings
from ..db import Database, Report, Upload
from ..services import services
from . import params, queries
from .http import NO_STORE, cached, error_response, install
from .openapi import document
from .reader import Reader

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")
install(blueprint)


def _database() -> Database:
    return services().database


def _reader() -> Reader:
    """Made on first use, in the worker process that uses it."""
    reader = current_app.extensions.get("dqrxfer.api.reader")
    if reader is None:
        reader = Reader.for_engine(_database().engine)
        current_app.extensions["dqrxfer.api.reader"] = reader
    return reader


def _settings() -> Settings:
    return services().settings


def absolute_url(url: str, base: str | None = None) -> str:
    """Report URLs may be configured relative to this server (embedded default)."""
    if url.startswith("/") and not url.startswith("//"):
        return (base or request.host_url.rstrip("/")) + url
    return urljoin(request.host_url, url)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``."""
    return queries.as_utc(moment).isoformat().replace("+00:00", "Z")


def report_json(row: queries.ReportRow, base: str) -> dict[str, object]:
    return {
        "graceid": row.graceid,
        "site": row.site,
        "revision": row.revision,
        "project": row.project,
        "url": absolute_url(row.url, base),
        "created": iso_utc(row.created),
        "updated": iso_utc(row.updated),
        "file_count": row.file_count,
        "bytes": row.total_bytes,
    }


def reports_json(
    rows: list[queries.ReportRow], files: dict[int, list[queries.FileRow]] | None = None
) -> list[dict[str, object]]:
    """The reports as the API shows them; with ``files`` (by report id), each
    with the list of its files."""
    base = request.host_url.rstrip("/")
    listed = [report_json(row, base) for row in rows]
    if files is not None:
        for row, entry in zip(rows, listed, strict=True):
            entry["files"] = [
                {"path": file.relpath, "size": file.size, "sha256": file.sha256}
                for file in files[row.id]
            ]
    return listed


def _next_url(cursor: str | None) -> str | None:
    """The URL of the next page: this request's filters with the new cursor."""
    if cursor is None:
        return None
    query = {key: value for key, value in request.args.items() if key not in ("cursor", "_")}
    query["cursor"] = cursor
    return f"{request.base_url}?{urlencode(query)}"


def _last_modified(rows: list[queries.ReportRow]) -> datetime | None:
    return max((queries.as_utc(row.updated) for row in rows), default=None)


@blueprint.get("/ping")
def ping() -> Response:
    response = jsonify(
        {
            "time_ms": int(time.time() * 1000),
            "version": __version__,
            "principal": current_principal(),
        }
    )
    response.headers["Cache-Control"] = NO_STORE
    return response


@blueprint.get("/openapi.json")
@public
def openapi() -> Response:
    settings = _settings()
    return cached(jsonify(document(__version__, settings.sites, tuple(settings.projects))))


@blueprint.get("/events/<graceid>/reports")
@public
def event_reports(graceid: str) -> Response:
    """Every report of one event (``?latest=1``: newest revision per site and
    project; ``?site=``, ``?project=``: only those; ``?files=1``: each report
    with its files, as ``dqr-upload`` compares them)."""
    settings = _settings()
    graceid = params.graceid(graceid)
    site = params.site(request.args, settings.sites)
    project = params.project(request.args, tuple(settings.projects))
    latest = params.flag(request.args, "latest")
    with_files = params.flag(request.args, "files")

    def read(
        connection: Connection,
    ) -> tuple[list[queries.ReportRow], dict[int, list[queries.FileRow]] | None]:
        rows = queries.event_reports(connection, graceid, site=site, latest=latest, project=project)
        if not with_files:
            return rows, None
        return rows, queries.report_files(connection, [row.id for row in rows])

    rows, files = _reader().run(read)
    body = {"graceid": graceid, "reports": reports_json(rows, files)}
    return cached(jsonify(body), _last_modified(rows))


@blueprint.get("/reports")
@public
def reports() -> Response:
    """Recent reports, most recently updated first, filtered and paged."""
    settings = _settings()
    where = queries.ReportFilter(
        site=params.site(request.args, settings.sites),
        project=params.project(request.args, tuple(settings.projects)),
        since=params.moment(request.args, "since"),
        until=params.moment(request.args, "until"),
    )
    limit = params.limit(request.args)
    cursor = params.report_cursor(request.args)
    with _database().session() as session:
        rows, after = queries.recent_reports(session, where, limit, cursor)
    body = {
        "reports": reports_json(rows),
        "next": _next_url(after.encode() if after else None),
    }
    return cached(jsonify(body), _last_modified(rows))


@blueprint.get("/events")
@public
def events() -> Response:
    """Recent events (newest first) with the sites that reported on them."""
    limit = params.limit(request.args)
    cursor = params.event_cursor(request.args)
    with _database().session() as session:
        summaries, after = queries.recent_events(session, limit, cursor)
    body = {
        "events": [
            {
                "graceid": event.graceid,
                "created": iso_utc(event.created),
                "updated": iso_utc(event.updated),
                "report_count": event.report_count,
                "sites": event.sites,
                "reports_url": url_for("api.event_reports", graceid=event.graceid, _external=True),
            }
            for event in summaries
        ],
        "next": _next_url(str(after) if after is not None else None),
    }
    last = max((event.updated for event in summaries), default=None)
    return cached(jsonify(body), last)


@blueprint.get("/uploads/<upload_id>")
def upload_record(upload_id: str) -> Response:
    """What the server made of one upload: state, size, sha256, report URL."""
    with _database().session() as session:
        row = session.get(Upload, upload_id)
        if row is None or row.principal != current_principal():
            return error_response(404, "upload: no such upload")
        report = session.get(Report, row.report_id) if row.report_id else None
        body = {
            "id": row.id,
            "state": row.state,
            "length": row.length,
            "sha256": row.sha256,
            "error": row.error,
            "graceid": row.graceid,
            "site": row.site,
            "revision": row.revision,
            "project": row.project,
            "report_url": absolute_url(report.url) if report else None,
        }
    return cached(jsonify(body))
