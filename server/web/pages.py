"""The HTML pages: ``/events/`` (recent events) and ``/events/<graceid>``.

Plain, server-rendered HTML with one small stylesheet.  The event page fills
its list of reports with the same helper report pages use
(``/static/dqrxfer.js``), so it shows the helper working on this server.  A
strict Content-Security-Policy allows nothing but this server's own files.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, Response, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as WerkzeugResponse

from ..api import params, queries
from ..auth import public
from ..db import Database
from ..services import services

blueprint = Blueprint("pages", __name__)

INDEX_LIMIT = 50
EVENT_REFRESH = 30  #: seconds between checks for new reports on an event page
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _database() -> Database:
    return services().database


def _page(html: str, status: int = 200) -> Response:
    """An HTML answer that caches like the API (ETag, revalidate on each use)."""
    response = Response(html, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if status == 200:
        response.headers["Cache-Control"] = "no-cache"
        response.add_etag()
        response.make_conditional(request)
    else:
        response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/")
@public
def home() -> WerkzeugResponse:
    return redirect(url_for("pages.index"))


@blueprint.get("/events/")
@public
def index() -> Response:
    """Recent events, newest first, with their sites; paged by ``?cursor=``."""
    try:
        cursor = params.event_cursor(request.args)
    except params.ParameterError as error:
        return _page(render_template("error.html", message=str(error)), 400)
    with _database().session() as session:
        events, after = queries.recent_events(session, INDEX_LIMIT, cursor)
    older = url_for("pages.index", cursor=after) if after is not None else None
    return _page(render_template("events.html", events=events, older=older, first=cursor is None))


@blueprint.get("/events/<graceid>")
@public
def event(graceid: str) -> Response:
    """One event; the helper fills in its reports per site and keeps them fresh.
    ``?project=`` shows one project's reports (default: every project's, each
    labelled with it)."""
    projects = tuple(services().settings.projects)
    try:
        graceid = params.graceid(graceid)
        project = params.project(request.args, projects)
    except params.ParameterError as error:
        return _page(render_template("error.html", message=str(error)), 400)
    return _page(
        render_template(
            "event.html",
            graceid=graceid,
            refresh=EVENT_REFRESH,
            project=project,
            projects=projects,
            api_url=url_for("api.event_reports", graceid=graceid, project=project),
        )
    )


@blueprint.app_template_filter("utc")
def utc(moment: datetime) -> str:
    return queries.as_utc(moment).strftime("%Y-%m-%d %H:%M UTC")


@blueprint.app_template_filter("iso_utc")
def iso_utc(moment) -> str:  # type: ignore[no-untyped-def]
    return queries.as_utc(moment).isoformat().replace("+00:00", "Z")


@blueprint.app_template_filter("site_name")
def site_name(site: str) -> str:
    return {"llo": "LLO", "lho": "LHO", "virgo": "Virgo", "kagra": "KAGRA"}.get(site, site.upper())
