"""Who is calling: the per-request gate in front of every endpoint.

``init_app`` installs a ``before_request`` that authenticates the caller in
the configured mode, or answers 401/403 itself:

* ``gssapi``: an ``Authorization: Negotiate`` token (accepted with the
  service keytab; the mutual-authentication token goes back in
  ``WWW-Authenticate`` and a session cookie is set), else a valid session
  cookie, else 401 with ``WWW-Authenticate: Negotiate``.
* ``remote-user``: the principal the trusted proxy passes (WSGI
  ``REMOTE_USER`` or the configured header), believed only when the peer is
  one of ``trusted_proxies``; anyone else is refused and their header ignored.
* ``none``: nobody is authenticated, and only loopback peers are served.

Endpoints decorated with :func:`public` (the read-only report links) pass
without credentials while ``public_read`` is on; those decorated with
:func:`exempt` (health probes) and OPTIONS requests (tus discovery, CORS
preflight) always do.  Everything else needs a principal: new
endpoints are protected unless someone decides otherwise.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, jsonify, request

from .negotiate import Acceptor, NegotiateError
from .sessions import SecretFileError, SessionSigner, load_or_create_secret
from .settings import AuthConfigError, AuthSettings

log = logging.getLogger("dqrxfer.auth")

EXTENSION = "dqrxfer.auth"
_PUBLIC_ATTRIBUTE = "dqrxfer_public"
_EXEMPT_ATTRIBUTE = "dqrxfer_exempt"
_MAX_PRINCIPAL = 256

View = TypeVar("View", bound=Callable[..., Any])


def public(view: View) -> View:
    """Mark a read-only view as answerable without credentials while the
    configuration's ``public_read`` is on (the default)."""
    setattr(view, _PUBLIC_ATTRIBUTE, True)
    return view


def exempt(view: View) -> View:
    """Mark a view that never asks for credentials (health probes): it must
    reveal nothing about reports or uploads."""
    setattr(view, _EXEMPT_ATTRIBUTE, True)
    return view


def current_principal() -> str | None:
    """The authenticated principal of the current request (None in ``none`` mode
    and on public endpoints)."""
    principal: str | None = g.get("dqrxfer_principal")
    return principal


class Refusal(Exception):
    """Answer the request with ``status`` and ``message`` instead of serving it."""

    def __init__(self, status: int, message: str, challenge: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.challenge = challenge


@dataclass
class _Outcome:
    """What the response must carry after authentication."""

    mutual_token: str | None = None
    issue_cookie_for: str | None = None
    clear_cookie: bool = False


def _peer_address() -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The socket peer (never a forwarded-for header)."""
    try:
        address = ipaddress.ip_address((request.remote_addr or "").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _valid_principal(value: str) -> bool:
    # "(null)": what Apache passes for an unset REMOTE_USER with the old
    # %{REMOTE_USER}s syntax.
    return (
        0 < len(value) <= _MAX_PRINCIPAL
        and value.isprintable()
        and " " not in value
        and value != "(null)"
    )


class Authenticator:
    """The configured mode, its keytab acceptor and cookie signer."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.acceptor: Acceptor | None = None
        self.signer: SessionSigner | None = None
        if settings.mode == "gssapi":
            self.acceptor = Acceptor(settings.keytab, settings.service_principal)
            if settings.session_lifetime > 0:
                secret = settings.session_secret or load_or_create_secret(
                    settings.session_secret_file
                )
                self.signer = SessionSigner(secret, settings.session_lifetime)

    # -- modes -------------------------------------------------------------

    def authenticate(self, outcome: _Outcome) -> str | None:
        mode = self.settings.mode
        if mode == "gssapi":
            return self._negotiate(outcome)
        if mode == "remote-user":
            return self._remote_user()
        self._loopback_only()
        return None

    def _loopback_only(self) -> None:
        """Without authentication, only this host's own clients are served."""
        peer = _peer_address()
        if peer is None or not peer.is_loopback:
            raise Refusal(403, "this server runs without authentication and serves loopback only")

    def _negotiate(self, outcome: _Outcome) -> str:
        assert self.acceptor is not None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "negotiate" and token.strip():
            try:
                principal, reply = self.acceptor.accept(token)
            except NegotiateError as error:
                log.warning(
                    "Kerberos authentication from %s failed: %s", request.remote_addr, error
                )
                raise Refusal(401, f"Kerberos authentication failed: {error}", True) from None
            log.info("authenticated %s from %s (Negotiate)", principal, request.remote_addr)
            outcome.mutual_token = reply
            outcome.issue_cookie_for = principal
            return principal
        cookie = request.cookies.get(self.settings.cookie_name)
        if cookie and self.signer is not None:
            signed = self.signer.verify(cookie)
            if signed is not None:
                return signed
            outcome.clear_cookie = True
            raise Refusal(401, "the session cookie is expired or invalid: authenticate again", True)
        raise Refusal(401, "authentication required: Kerberos (HTTP Negotiate)", True)

    def _remote_user(self) -> str:
        header = self.settings.remote_user_header
        forwarded = request.headers.get(header) if header else None
        peer = _peer_address()
        if peer is None or not any(peer in net for net in self.settings.trusted_proxies):
            if forwarded is not None:
                log.warning("ignored %s from %s: not a trusted proxy", header, request.remote_addr)
            ignored = f" ({header} ignored)" if forwarded is not None else ""
            raise Refusal(
                403,
                f"requests must come through the authenticating proxy; {request.remote_addr} "
                f"is not a trusted proxy{ignored}",
            )
        principal = request.environ.get("REMOTE_USER") or forwarded
        if not principal:
            raise Refusal(401, "the proxy passed no authenticated user", True)
        if not _valid_principal(principal):
            log.warning("malformed user name from proxy %s", request.remote_addr)
            raise Refusal(401, "the proxy passed a malformed user name", True)
        return principal

    # -- hooks -------------------------------------------------------------


def _is_public(settings: AuthSettings) -> bool:
    if request.method == "OPTIONS":
        return True
    endpoint = request.endpoint
    if endpoint is None:  # no such route: the 404 reveals nothing
        return True
    view = current_app.view_functions.get(endpoint)
    if getattr(view, _EXEMPT_ATTRIBUTE, False):
        return True
    if not settings.public_read:
        return False
    if endpoint == "static" or endpoint.endswith(".static"):
        return True
    return bool(getattr(view, _PUBLIC_ATTRIBUTE, False))


def is_public_read() -> bool:
    """Whether the current request's endpoint answers without credentials: a
    :func:`public` view while ``public_read`` is on (whatever the method, so a
    CORS preflight for it counts too)."""
    authenticator: Authenticator | None = current_app.extensions.get(EXTENSION)
    if authenticator is None or not authenticator.settings.public_read:
        return False
    view = current_app.view_functions.get(request.endpoint or "")
    return bool(getattr(view, _PUBLIC_ATTRIBUTE, False))


def _refusal_response(refusal: Refusal) -> Response:
    if request.path.startswith("/api/"):
        response = jsonify({"error": refusal.message})
    else:
        response = Response(refusal.message + "\n", mimetype="text/plain")
    response.status_code = refusal.status
    response.headers["Cache-Control"] = "no-store"
    if refusal.challenge:
        response.headers["WWW-Authenticate"] = "Negotiate"
    return response


def _before_request() -> Response | None:
    authenticator: Authenticator = current_app.extensions[EXTENSION]
    outcome = _Outcome()
    g.dqrxfer_auth = outcome
    g.dqrxfer_principal = None
    if authenticator.settings.mode != "none" and _is_public(authenticator.settings):
        return None
    try:
        g.dqrxfer_principal = authenticator.authenticate(outcome)
    except Refusal as refusal:
        return _refusal_response(refusal)
    return None


def _after_request(response: Response) -> Response:
    outcome: _Outcome | None = g.get("dqrxfer_auth")
    if outcome is None:
        return response
    authenticator: Authenticator = current_app.extensions[EXTENSION]
    settings = authenticator.settings
    if outcome.mutual_token:
        response.headers["WWW-Authenticate"] = f"Negotiate {outcome.mutual_token}"
    secure = request.is_secure if settings.cookie_secure is None else settings.cookie_secure
    if outcome.issue_cookie_for and authenticator.signer is not None:
        response.set_cookie(
            settings.cookie_name,
            authenticator.signer.issue(outcome.issue_cookie_for),
            max_age=authenticator.signer.cookie_max_age,
            path="/",
            secure=secure,
            httponly=True,
            samesite="Strict",
        )
    elif outcome.clear_cookie:
        response.delete_cookie(
            settings.cookie_name, path="/", secure=secure, httponly=True, samesite="Strict"
        )
    return response


def preflight(settings: AuthSettings) -> None:
    """Checks for ``serve`` to run once before any worker starts: the session
    secret exists with safe permissions, the keytab yields credentials.
    Raises :class:`AuthConfigError` naming the problem."""
    try:
        authenticator = Authenticator(settings)
        if authenticator.acceptor is not None:
            authenticator.acceptor.check()
    except (NegotiateError, SecretFileError, OSError) as error:
        raise AuthConfigError(f"auth: {error}") from None


def init_app(app: Flask, settings: AuthSettings) -> Authenticator:
    """Install authentication on ``app``; returns the :class:`Authenticator`."""
    authenticator = Authenticator(settings)
    app.extensions[EXTENSION] = authenticator
    app.before_request(_before_request)
    app.after_request(_after_request)
    if settings.mode != "none" and not settings.rules:
        log.warning("auth.rules is empty: every upload will be refused (403)")
    return authenticator
