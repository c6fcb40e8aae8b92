"""The report tree is untrusted content: anyone with an upload right publishes
HTML there, and it is served from the same host as the authenticated API.

Every answer under ``/reports/`` (files, directory indexes, 404s and other
errors) therefore carries:

* ``Content-Security-Policy: sandbox ...`` without ``allow-same-origin``: the
  page runs with an opaque origin (``Origin: null``), so to the browser its
  requests to ``/files/`` and ``/api/v1/uploads/`` are cross-site: the
  SameSite session cookie stays home and CORS grants ``null`` nothing there.
  Scripts, popups (which leave the sandbox: links to other sites open
  normally) and downloads stay allowed; forms, modals, ``allow-same-origin``
  and top navigation of other frames do not.
* ``X-Content-Type-Options: nosniff``: a ``.txt`` or ``.json`` is never run
  as HTML or script.
* ``Access-Control-Allow-Origin: *`` (never with credentials): an opaque
  origin is cross-origin even to its own files, so fonts, module scripts and
  ``fetch("data.json")`` of the page's own report need it.  The reports are
  public reading anyway.

No ``Cross-Origin-Resource-Policy``: ``same-origin`` or ``same-site`` would
stop the sandboxed page from showing its own images (its requests come from
the opaque origin).  The front-end configurations in ``ops/`` set the same
headers; the tests compare them with :data:`REPORT_HEADERS`.

Static assets (``/static/``, the jQuery helper that report pages load) get
``Access-Control-Allow-Origin: *`` as well, so a page may load them with
``crossorigin`` (Subresource Integrity) from its opaque origin.
"""

from __future__ import annotations

from flask import Flask, Response, request

REPORTS_PREFIX = "/reports/"

#: What a report page may do in its sandbox (and nothing more).
REPORT_SANDBOX = "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox allow-downloads"

REPORT_HEADERS: dict[str, str] = {
    "Content-Security-Policy": REPORT_SANDBOX,
    "X-Content-Type-Options": "nosniff",
    "Access-Control-Allow-Origin": "*",
}


def mark_untrusted(response: Response) -> Response:
    """Give ``response`` (of any status) the headers of untrusted content."""
    for name, value in REPORT_HEADERS.items():
        response.headers[name] = value
    return response


def _after_request(response: Response) -> Response:
    if request.path.startswith(REPORTS_PREFIX):
        return mark_untrusted(response)
    endpoint = request.endpoint or ""
    if endpoint == "static" or endpoint.endswith(".static"):
        response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def install(app: Flask) -> None:
    """Mark every answer under ``/reports/`` (and share ``/static/``) on ``app``."""
    app.after_request(_after_request)
