"""Cross-origin resource sharing (CORS) for browser pages on other hosts.

One policy object per area (the links API, the tus endpoint), all sharing the
configured list of origins (``cors_origins``).  Only origins on that list get
``Access-Control-*`` headers; no credentials are ever allowed, so a page on an
allowed origin can read but never act with the user's cookies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flask import Request, Response


@dataclass(frozen=True)
class CorsPolicy:
    """What a cross-origin page may do with one group of endpoints."""

    origins: tuple[str, ...]
    methods: tuple[str, ...] = ("GET", "HEAD", "OPTIONS")
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int = 600

    def allowed_origin(self, origin: str | None) -> str | None:
        """The value for ``Access-Control-Allow-Origin``, or None when not allowed."""
        if not origin or not self.origins:
            return None
        if "*" in self.origins:
            return "*"
        return origin if origin.lower() in self.origins else None

    def apply(self, request: Request, response: Response) -> Response:
        """Add the CORS headers that ``request`` earns to ``response``."""
        if self.origins and "*" not in self.origins:
            # The answer depends on the Origin header: caches must keep one per origin.
            response.vary.add("Origin")
        allowed = self.allowed_origin(request.headers.get("Origin"))
        if allowed is None:
            return response
        response.headers["Access-Control-Allow-Origin"] = allowed
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response.headers["Access-Control-Allow-Methods"] = ", ".join(self.methods)
            wanted = _header_names(request.headers.get("Access-Control-Request-Headers", ""))
            granted = [name for name in wanted if name.lower() in self._allowed_lower]
            if granted:
                response.headers["Access-Control-Allow-Headers"] = ", ".join(granted)
            response.headers["Access-Control-Max-Age"] = str(self.max_age)
        elif self.expose_headers:
            response.headers["Access-Control-Expose-Headers"] = ", ".join(self.expose_headers)
        return response

    @property
    def _allowed_lower(self) -> frozenset[str]:
        return frozenset(name.lower() for name in self.allow_headers)


def _header_names(value: str) -> Iterable[str]:
    return [name.strip() for name in value.split(",") if name.strip()]
