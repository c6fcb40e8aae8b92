"""What browser clients (tus-js-client, Uppy) on other origins need from the
tus endpoint under CORS: the methods and request headers a preflight must
allow, and the response headers they must be able to read.

The application supplies the policy (which origins) as an object with
``apply(request, response)``; these lists are what it should allow.
"""

from __future__ import annotations

from typing import Protocol

from flask import Request, Response

METHODS = ("POST", "HEAD", "PATCH", "DELETE", "OPTIONS")
ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "Origin",
    "X-Requested-With",
    "X-Request-ID",
    "X-HTTP-Method-Override",
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Checksum",
    "Upload-Block-Checksum",
)
EXPOSE_HEADERS = (
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Expires",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
)
#: Browsers may cache a preflight this long (seconds): uploads make many requests.
MAX_AGE = 86400


class CorsHeaders(Protocol):
    """Adds the CORS headers a request earns to its response."""

    def apply(self, request: Request, response: Response) -> Response: ...


class NoCors:
    """No cross-origin access (the default)."""

    def apply(self, request: Request, response: Response) -> Response:
        return response
