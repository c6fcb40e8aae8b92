"""Checking the way to the server: log in, ping, measure, compare clocks.

:func:`ping` is what ``dqr-ping`` runs.  *Login* is the first authenticated
request (``GET /api/v1/ping``): it includes the connection set-up and, with
Kerberos, the Negotiate handshake that gets the session cookie; the pings
after it reuse the connection and the cookie.  Each answer carries the
server's time, which gives the clock offset (the server's clock minus ours,
taken at the middle of the request): Kerberos refuses tickets when the two
differ by more than :data:`KERBEROS_SKEW` seconds.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import requests

from .errors import AuthenticationError, DqrxferError, RefusedError, TransientError
from .transport import (
    NotAServerError,
    check_api_response,
    check_response,
    describe_error,
    server_message,
)

PING_PATH = "/api/v1/ping"
#: MIT Kerberos' default maximum clock skew (``clockskew`` in krb5.conf).
KERBEROS_SKEW = 300.0


@dataclass(frozen=True)
class Ping:
    """One ping: how long it took, the HTTP status, the clock offset, or the error."""

    seconds: float
    status: int | None = None
    offset: float | None = None
    error: DqrxferError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200


@dataclass
class PingReport:
    server: str
    login_seconds: float
    principal: str | None = None
    version: str | None = None
    pings: list[Ping] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return 100.0 * sum(p.ok for p in self.pings) / len(self.pings) if self.pings else 0.0

    @property
    def clock_offset(self) -> float | None:
        """The median offset of the successful pings (seconds, server minus local)."""
        offsets = [p.offset for p in self.pings if p.offset is not None]
        return statistics.median(offsets) if offsets else None


def _request(session: requests.Session, url: str) -> tuple[requests.Response, float, float]:
    sent = time.time()
    started = time.monotonic()
    try:
        response = session.get(url)
    except requests.RequestException as error:
        raise TransientError(describe_error(error, url)) from error
    seconds = time.monotonic() - started
    return response, seconds, sent + seconds / 2


def _offset(response: requests.Response, middle: float) -> float | None:
    try:
        server_ms = response.json().get("time_ms")
    except ValueError:
        return None
    return server_ms / 1000.0 - middle if isinstance(server_ms, int | float) else None


def login(session: requests.Session, server: str) -> PingReport:
    """The first, authenticated request; raises on any failure."""
    url = server.rstrip("/") + PING_PATH
    response, seconds, _ = _request(session, url)
    if response.status_code == 403:
        raise AuthenticationError(f"{server}: {server_message(response)}")
    body = check_api_response(response, server, "login")
    if not isinstance(body, dict):
        raise NotAServerError(server, "its answer is not dqrxfer's")
    return PingReport(server, seconds, body.get("principal"), body.get("version"))


def ping_once(session: requests.Session, server: str) -> Ping:
    url = server.rstrip("/") + PING_PATH
    started = time.monotonic()
    try:
        response, seconds, middle = _request(session, url)
        check_response(response, "ping")
    except (TransientError, RefusedError, AuthenticationError) as error:
        status = getattr(error, "status", None)
        return Ping(time.monotonic() - started, status, error=error)
    return Ping(seconds, response.status_code, _offset(response, middle))


def ping(session: requests.Session, server: str, count: int = 3) -> PingReport:
    """Log in, then ``count`` pings.  Login failures raise; ping failures are recorded."""
    report = login(session, server)
    for _ in range(count):
        report.pings.append(ping_once(session, server))
    return report
