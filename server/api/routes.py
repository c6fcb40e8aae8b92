"""Read-only JSON endpoints used by clients and report pages."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from urllib.parse import urljoin

from dqrxfer import __version__, contract
from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select

from ..auth import current_principal
from ..db import Database, Event, Report, Upload

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")


def _database() -> Database:
    return current_app.extensions["dqrxfer.db"]


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


def absolute_url(url: str) -> str:
    """Report URLs may be configured relative to this server (embedded default)."""
    return urljoin(request.host_url, url)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC; SQLite hands back naive datetimes that were stored as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def report_json(report: Report) -> dict[str, object]:
    return {
        "graceid": report.event.graceid,
        "site": report.site,
        "revision": report.revision,
        "project": report.project,
        "url": absolute_url(report.url),
        "created": iso_utc(report.created),
        "updated": iso_utc(report.updated),
        "file_count": report.file_count,
        "bytes": report.total_bytes,
    }


@blueprint.get("/ping")
def ping() -> Response:
    return jsonify(
        {
            "time_ms": int(time.time() * 1000),
            "version": __version__,
            "principal": current_principal(),
        }
    )


@blueprint.get("/events/<graceid>/reports")
def event_reports(graceid: str) -> Response | tuple[Response, int]:
    """Every report of one event.  A valid graceid with no reports yet is an
    empty list (200): pages poll for events whose reports are still coming."""
    try:
        contract.validate_graceid(graceid)
    except contract.ContractError as error:
        return _error(400, str(error))
    with _database().session() as session:
        reports = session.scalars(
            select(Report)
            .join(Event)
            .where(Event.graceid == graceid)
            .order_by(Report.site, Report.revision)
        ).all()
        body = [report_json(report) for report in reports]
    return jsonify({"graceid": graceid, "reports": body})


@blueprint.get("/uploads/<upload_id>")
def upload_record(upload_id: str) -> Response | tuple[Response, int]:
    """What the server made of one upload: state, size, sha256, report URL."""
    with _database().session() as session:
        row = session.get(Upload, upload_id)
        if row is None:
            return _error(404, "upload: no such upload")
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
    return jsonify(body)
