"""HTTP behaviour shared by every API endpoint: JSON errors, caching
validators (ETag, Last-Modified, 304), Cache-Control, CORS (public reads:
any origin, without credentials; the rest: ``cors_origins``) and a
``Server-Timing`` header with the time spent in the API (wall and CPU).

Caching policy: answers are ``Cache-Control: no-cache`` with a strong ETag
(a hash of the body) and, where it means something, ``Last-Modified``.  A
page that polls therefore always gets fresh data, and a poll that finds
nothing new is a 304 without a body: the browser sends ``If-None-Match`` by
itself and hands the cached JSON to the script.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed, NotFound

from ..auth import is_public_read
from ..cors import CorsPolicy
from ..services import services
from .params import ParameterError

PREFIX = "/api/"
#: Request headers a cross-origin page may send to the read endpoints.
READ_HEADERS = ("If-None-Match", "If-Modified-Since", "Cache-Control")
EXPOSED = ("ETag", "Server-Timing")
POLL = "no-cache"
NO_STORE = "no-store"


def error_response(status: int, message: str, parameter: str | None = None) -> Response:
    body: dict[str, object] = {"error": message}
    if parameter is not None:
        body["parameter"] = parameter
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = NO_STORE
    return response


def cached(response: Response, last_modified: datetime | None = None) -> Response:
    """Mark a 200 answer as revalidated on every use (ETag added on the way out)."""
    response.headers["Cache-Control"] = POLL
    if last_modified is not None:
        response.last_modified = last_modified
    return response


def _in_api() -> bool:
    return request.path.startswith(PREFIX)


@dataclass(frozen=True)
class _ApiCors:
    """The API's two CORS policies, built once per application."""

    #: Public reads answer every origin, ``null`` included (sandboxed report
    #: pages), without credentials: the same bytes any client reads.
    public: CorsPolicy
    #: Everything else: only the configured ``cors_origins``.
    configured: CorsPolicy


_CORS_EXTENSION = "dqrxfer.api.cors"


def _cors_policy() -> CorsPolicy:
    policies: _ApiCors = current_app.extensions[_CORS_EXTENSION]
    return policies.public if is_public_read() else policies.configured


def install(blueprint: Blueprint) -> None:
    """Hook the shared behaviour into ``blueprint`` (and its part of the URL space)."""

    @blueprint.record_once
    def _register(state: BlueprintSetupState) -> None:
        app = state.app
        settings = services(app).settings
        app.extensions[_CORS_EXTENSION] = _ApiCors(
            public=CorsPolicy(
                origins=("*",),
                allow_headers=(*READ_HEADERS, "X-Requested-With"),
                expose_headers=EXPOSED,
            ),
            configured=CorsPolicy(
                origins=settings.cors_origins,
                allow_headers=READ_HEADERS,
                expose_headers=EXPOSED,
            ),
        )

    @blueprint.before_app_request
    def _start() -> None:
        if _in_api():
            g.api_started = time.perf_counter()
            g.api_cpu = time.thread_time()

    @blueprint.after_app_request
    def _finish(response: Response) -> Response:
        if not _in_api():
            return response
        if (
            request.method in ("GET", "HEAD")
            and response.status_code == 200
            and response.headers.get("Cache-Control") == POLL
        ):
            response.add_etag()
            response.make_conditional(request)
        _cors_policy().apply(request, response)
        started = g.get("api_started")
        if started is not None:
            elapsed = (time.perf_counter() - started) * 1000
            cpu = (time.thread_time() - g.api_cpu) * 1000
            # app: wall time in the API; cpu: this thread's processor time of it
            # (the difference is waiting: for the database, or for a core).
            response.headers["Server-Timing"] = f"app;dur={elapsed:.2f}, cpu;dur={cpu:.2f}"
        return response

    @blueprint.errorhandler(ParameterError)
    def _bad_parameter(error: ParameterError) -> Response:
        return error_response(400, str(error), error.name)

    def _json_http_error(error: HTTPException) -> Response | HTTPException:
        if not _in_api():
            return error
        status = error.code or 500
        if status == 404:
            message = f"not found: {request.path}"
        elif status == 405:
            message = f"method {request.method} not allowed on {request.path}"
        else:
            message = (error.description or error.name).rstrip(".")
        response = error_response(status, message)
        for name, value in error.get_headers():
            if name.lower() == "allow":
                response.headers["Allow"] = value
        return response

    # Inside the API's own views every HTTP error is JSON; unknown URLs and
    # wrong methods under /api/ reach no view, so they are caught app-wide
    # (and handed back untouched outside /api/).
    blueprint.register_error_handler(HTTPException, _json_http_error)
    blueprint.app_errorhandler(NotFound)(_json_http_error)
    blueprint.app_errorhandler(MethodNotAllowed)(_json_http_error)

    @blueprint.errorhandler(InternalServerError)
    def _server_error(_error: InternalServerError) -> Response:
        return error_response(500, "internal server error (logged on the server)")
