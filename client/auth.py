"""Kerberos for the client: credentials checked up front, SPNEGO on requests.

:func:`make_auth` returns a ``requests`` auth object for a
``requests.Session``; :func:`login` makes the cheap authenticated request
(``GET /api/v1/ping``) that gets the session cookie, so the uploads that
follow carry the cookie and no new handshake::

    session = requests.Session()
    session.auth = make_auth()                   # or make_auth(keytab="robot.keytab")
    login(session, "https://dqr.example.org")     # AuthenticationError if refused

Credentials, in order: ``keytab`` (a robot's, ``--keytab``), else the ticket
cache (``KRB5CCNAME`` or the default cache), which MIT Kerberos fills from
``KRB5_CLIENT_KTNAME`` when that names a keytab.  With none of them the error
reads like ``klist``'s and says what to run.  An expired ticket says so.

Two traps of HTTP Negotiate are closed here:

* requests-gssapi answers a 401 by sending the *same* request again.  A
  file-like body has been read by then (it would go out empty) and a
  generator is spent (it would go out as zero bytes: silent data loss).
  :class:`KerberosAuth` resends only bodies that give the same bytes again
  (bytes, or an iterable that restarts, such as the transport's slice
  bodies); for a file or an iterator it raises :class:`SessionExpired`
  instead, and the caller sends a fresh request.
* Tokens are never logged: requests-gssapi's debug messages are redacted.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit

import gssapi
import requests
from gssapi.raw.misc import GSSError
from requests_gssapi import HTTPSPNEGOAuth
from requests_gssapi.exceptions import MutualAuthenticationError, SPNEGOExchangeError
from requests_gssapi.gssapi_ import OPTIONAL

from .errors import AuthenticationError, SessionExpired

log = logging.getLogger("dqr-xfer")

#: The server's session cookie (``auth.cookie_name`` on the server).
SESSION_COOKIE = "dqrxfer_session"
#: Environment variable naming the service principal when the host name is not it.
SERVICE_ENV = "DQRXFER_SERVICE_PRINCIPAL"
PING_PATH = "/api/v1/ping"
TIMEOUT = (10, 60)

_HINT = (
    "run `kinit albert.einstein@LIGO.ORG` (people), or give a robot keytab with "
    "--keytab FILE or KRB5_CLIENT_KTNAME (robots), and try again"
)


class _RedactTokens(logging.Filter):
    """Blank out tokens in requests-gssapi's debug messages, which print the
    Authorization header and the server's reply token, and drop its
    tracebacks for a ticket that cannot be had."""

    _patterns = (
        re.compile(r"(Negotiate)\s+[A-Za-z0-9+/=]{8,}"),
        re.compile(r"(header:)\s*\S.*", re.S),
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.funcName == "generate_request_header":
            # A failure to get a ticket is logged there with a traceback at
            # ERROR level; the client reports it once, in words.
            return False
        message = record.getMessage()
        redacted = message
        for pattern in self._patterns:
            redacted = pattern.sub(r"\1 <redacted>", redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _install_redaction() -> None:
    logger = logging.getLogger("requests_gssapi.gssapi_")
    if not any(isinstance(f, _RedactTokens) for f in logger.filters):
        logger.addFilter(_RedactTokens())


_install_redaction()


def default_ccache() -> str:
    """The ticket cache MIT Kerberos uses by default, as klist names it."""
    name = os.environ.get("KRB5CCNAME") or f"FILE:/tmp/krb5cc_{os.getuid()}"
    return name.removeprefix("FILE:")


def _client_keytab_from_environment() -> Path | None:
    """The robot keytab ``KRB5_CLIENT_KTNAME`` names, if it names a file."""
    name = os.environ.get("KRB5_CLIENT_KTNAME")
    if not name:
        return None
    kind, colon, rest = name.partition(":")
    if colon and kind in ("FILE", "WRFILE"):
        return Path(rest)
    return None if colon and "/" not in kind else Path(name)


def _gss_reason(error: GSSError) -> str:
    """GSSAPI's own words (the minor status if it says anything)."""
    message = error.gen_message()
    match = re.search(r"Minor \(\d+\): (.*)$", message, re.S)
    if match and match.group(1).strip() not in ("", "Success", "Unknown error"):
        return match.group(1).strip()
    match = re.search(r"Major \(\d+\): (.*?)(, Minor|$)", message, re.S)
    return match.group(1).strip() if match else message


def check_credentials(
    keytab: str | os.PathLike[str] | None = None,
    principal: str | None = None,
    ccache: str | os.PathLike[str] | None = None,
) -> gssapi.Credentials:
    """Kerberos initiator credentials, or :class:`AuthenticationError` saying
    what is wrong (no ticket, expired ticket, unusable keytab) and what to do.

    ``keytab`` gets a ticket for ``principal`` (default: the keytab's first)
    into a private in-memory cache; the user's own cache is left alone.
    ``ccache`` names a ticket cache instead of ``KRB5CCNAME``.
    """
    name = gssapi.Name(principal, gssapi.NameType.kerberos_principal) if principal else None
    if keytab is not None:
        path = Path(keytab)
        if not path.is_file() or not os.access(path, os.R_OK):
            raise AuthenticationError(f"keytab {path}: not a readable file")
        # A private cache per call: two keytabs in one process must not share tickets.
        store: dict[bytes | str, bytes | str] = {
            "client_keytab": str(path),
            "ccache": f"MEMORY:dqrxfer-{secrets.token_hex(8)}",
        }
        try:
            creds = gssapi.Credentials(usage="initiate", name=name, store=store)
            creds.lifetime  # noqa: B018 - acquires the ticket now, not at the first request
        except GSSError as error:
            raise AuthenticationError(
                f"cannot get a Kerberos ticket from keytab {path}: {_gss_reason(error)}"
            ) from None
        return creds
    cache_store: dict[bytes | str, bytes | str] | None = (
        {"ccache": f"FILE:{os.fspath(ccache)}"} if ccache else None
    )
    cache = os.fspath(ccache) if ccache else default_ccache()
    try:
        creds = gssapi.Credentials(usage="initiate", name=name, store=cache_store)
        lifetime = creds.lifetime
    except gssapi.exceptions.ExpiredCredentialsError:
        raise AuthenticationError(
            f"klist: Kerberos ticket in {cache} has expired; {_HINT}"
        ) from None
    except GSSError as error:
        reason = _gss_reason(error)
        robot = _client_keytab_from_environment()
        if robot is not None and not (robot.is_file() and os.access(robot, os.R_OK)):
            # MIT Kerberos silently ignores a client keytab it cannot read.
            raise AuthenticationError(
                f"KRB5_CLIENT_KTNAME names keytab {robot}, which is not a readable file; "
                "fix the path or its permissions, or run `kinit`"
            ) from None
        if "No Kerberos credentials available" in reason or not Path(cache).exists():
            raise AuthenticationError(
                f"klist: No credentials cache found (filename: {cache}); {_HINT}"
            ) from None
        raise AuthenticationError(
            f"no usable Kerberos ticket in {cache}: {reason}; {_HINT}"
        ) from None
    if lifetime is not None and lifetime <= 0:
        raise AuthenticationError(f"klist: Kerberos ticket in {cache} has expired; {_HINT}")
    return creds


def target_name(service: str | None) -> str | gssapi.Name:
    """requests-gssapi's ``target_name``: ``HTTP/host@REALM`` (a principal),
    ``HTTP@host`` (a host-based service), or by default ``HTTP`` at the URL's host."""
    service = service or os.environ.get(SERVICE_ENV) or "HTTP"
    if "/" in service:
        return gssapi.Name(service, gssapi.NameType.kerberos_principal)
    return service


def _replayable(body: object) -> bool:
    """Whether sending ``body`` again sends the same bytes: absent, bytes, or
    an iterable that starts afresh on each iteration.  A file-like body (read
    to its end) and an iterator or generator (spent) are not."""
    if body is None or isinstance(body, bytes | str):
        return True
    if hasattr(body, "read") or not hasattr(body, "__iter__"):
        return False
    try:
        return iter(body) is not body
    except TypeError:
        return False


def _server_message(response: requests.Response) -> str:
    try:
        data = response.json()
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return str(data["error"])
    except ValueError:
        pass
    return response.text.strip()[:300] or f"HTTP {response.status_code}"


# requests-gssapi has no type information: its class is Any to mypy.
class KerberosAuth(HTTPSPNEGOAuth):  # type: ignore[misc]
    """HTTP Negotiate for a ``requests.Session``.

    * Sends the token with the first request (opportunistic), unless the
      request carries the server's session cookie: then no handshake at all.
    * Verifies the server's mutual-authentication token when it sends one.
    * Never resends a body that cannot be sent twice (see the module docstring).
    * Never hands a 401 to the caller: raises :class:`AuthenticationError`.
    """

    def __init__(
        self,
        creds: gssapi.Credentials | None,
        problem: AuthenticationError | None = None,
        service: str | None = None,
        cookie_name: str = SESSION_COOKIE,
    ) -> None:
        super().__init__(
            mutual_authentication=OPTIONAL,
            target_name=target_name(service),
            opportunistic_auth=creds is not None,
            creds=creds,
            sanitize_mutual_error_response=False,
        )
        self.problem = problem
        self.cookie_name = cookie_name
        self.last_failure: str | None = None
        self.stale_cookie: str | None = None

    def _session_cookie(self, request: requests.PreparedRequest) -> str | None:
        for part in request.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie_name:
                return value
        return None

    def _drop_session_cookie(self, request: requests.PreparedRequest) -> None:
        parts = [
            part.strip()
            for part in request.headers.get("Cookie", "").split(";")
            if part.strip() and part.strip().partition("=")[0] != self.cookie_name
        ]
        if parts:
            request.headers["Cookie"] = "; ".join(parts)
        else:
            request.headers.pop("Cookie", None)

    def _token(self, host: str) -> str | None:
        """A fresh ``Negotiate`` header for ``host`` (None if no ticket can be had)."""
        try:
            header: str = self.generate_request_header(None, host, is_preemptive=True)
            return header
        except SPNEGOExchangeError as error:
            self.last_failure = str(error)
            log.debug("Kerberos: no token for %s: %s", host, error)
            return None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        self.last_failure = None
        cookie = self._session_cookie(request)
        if cookie is not None and cookie == self.stale_cookie:
            # The server refused this cookie before; the session may not know yet.
            self._drop_session_cookie(request)
            cookie = None
        if self.creds is not None and cookie is None:
            header = self._token(urlsplit(request.url or "").hostname or "")
            if header is not None:
                request.headers["Authorization"] = header
        # types-requests leaves register_hook unannotated.
        request.register_hook("response", self.handle_response)  # type: ignore[no-untyped-call]
        self.pos = None  # bodies are never rewound and resent here
        return request

    def handle_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code == 401:
            return self._handle_401(response, **kwargs)
        if "negotiate" not in response.headers.get("WWW-Authenticate", "").lower():
            return response  # nothing to verify (cookie-authenticated or public)
        try:
            verified: requests.Response = super().handle_other(response)
            return verified
        except MutualAuthenticationError:
            raise AuthenticationError(
                f"{response.url}: the server's identity could not be verified "
                "(Kerberos mutual authentication failed)"
            ) from None

    def _handle_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        request = response.request
        _finish(response)
        offered = "negotiate" in response.headers.get("WWW-Authenticate", "").lower()
        message = _server_message(response)
        host = urlparse(response.url).hostname or ""
        if offered and self.creds is None:
            raise self.problem or AuthenticationError(f"{message}; {_HINT}")
        if not offered:
            raise AuthenticationError(f"the server refused the request: {message}")
        if kwargs.pop("num_401s", 0) or "Authorization" in request.headers:
            detail = f" ({self.last_failure})" if self.last_failure else ""
            raise AuthenticationError(f"Kerberos authentication refused: {message}{detail}")
        cookie = self._session_cookie(request)
        if cookie is None:
            raise AuthenticationError(
                f"cannot get a Kerberos service ticket for {host}: {self.last_failure}; "
                f"if the server's principal is not HTTP/{host}, name it with {SERVICE_ENV}"
            )
        self.stale_cookie = cookie
        if not _replayable(request.body):
            raise SessionExpired(
                f"{message} (the request was not resent: its body cannot be sent twice)"
            )
        header = self._token(host)  # a new context: the 401 carries no token
        if header is None:
            raise AuthenticationError(
                f"cannot get a Kerberos service ticket for {host}: {self.last_failure}"
            )
        retry = request.copy()
        self._drop_session_cookie(retry)
        retry.headers["Authorization"] = header
        new = response.connection.send(retry, **kwargs)
        new.history.append(response)
        return self.handle_response(new, num_401s=1, **kwargs)


def _finish(response: requests.Response) -> None:
    """Read the refusal and let its connection go.

    A server that refuses a request before reading its body cannot keep the
    connection (gunicorn drains at most 64 KiB, then closes it without saying
    so): reusing it would fail at random.  After a refused body the
    connection is closed here and the next request opens a new one.
    """
    connection = getattr(response.raw, "connection", None)
    response.content  # noqa: B018 - read the message (this returns the connection to the pool)
    if response.request.body is not None and connection is not None:
        connection.close()  # the pool opens a new one when it hands this out again
    response.raw.release_conn()


def make_auth(
    keytab: str | os.PathLike[str] | None = None,
    principal: str | None = None,
    service: str | None = None,
    ccache: str | os.PathLike[str] | None = None,
    required: bool = False,
) -> KerberosAuth:
    """The auth object for a ``requests.Session`` (see the module docstring).

    Credentials are checked now.  With an explicit ``keytab`` (or
    ``required``) a problem raises :class:`AuthenticationError` at once;
    otherwise it is kept and raised when a server asks for Kerberos, so a
    development server without authentication still works without a ticket.
    ``keytab`` defaults to ``$KRB5_CLIENT_KTNAME`` only through MIT's own
    lookup of that variable.
    """
    try:
        creds = check_credentials(keytab, principal, ccache)
    except AuthenticationError as error:
        if keytab is not None or required:
            raise
        return KerberosAuth(None, error, service)
    return KerberosAuth(creds, None, service)


def auth_factory(
    keytab: str | os.PathLike[str] | None = None,
    principal: str | None = None,
    service: str | None = None,
) -> Callable[[], KerberosAuth]:
    """Check the credentials once, and make one :class:`KerberosAuth` per
    session from them (an auth object keeps per-host security contexts, which
    threads must not share; the credentials themselves may be shared).

    Raises :class:`AuthenticationError` at once for an unusable ``keytab``;
    a missing ticket is kept and raised when a server asks for Kerberos.
    """
    try:
        creds: gssapi.Credentials | None = check_credentials(keytab, principal)
        problem: AuthenticationError | None = None
    except AuthenticationError as error:
        if keytab is not None:
            raise
        creds, problem = None, error

    def make() -> KerberosAuth:
        return KerberosAuth(creds, problem, service)

    return make


def login(
    session: requests.Session, server: str, timeout: float | tuple[float, float] = TIMEOUT
) -> dict[str, Any]:
    """The cheap authenticated request: ``GET /api/v1/ping``.

    Returns the server's answer (time, version, principal); the session keeps
    the cookie the server sets.  Raises :class:`AuthenticationError` when the
    server refuses the credentials.
    """
    response = session.get(server.rstrip("/") + PING_PATH, timeout=timeout)
    if response.status_code in (401, 403):
        raise AuthenticationError(f"{server}: {_server_message(response)}")
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer
