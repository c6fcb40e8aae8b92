"""Building the HTTP session every client request goes through, in one place.

All traffic (tus, the upload record, ping, the links API) uses a
:class:`requests.Session` made here, so that:

* every request has a connect and a read timeout (requests has none by
  default).  urllib3 keeps the *connect* timeout on the socket while it sends
  a request body, so the connect timeout also bounds a stalled send;
* authentication plugs in as a plain ``requests`` auth object (Kerberos via
  ``dqrxfer.auth``, or anything else): ``make_session(auth=...)``;
* urllib3 retries nothing by itself: retrying is :mod:`dqrxfer.retry`'s job,
  where it is bounded and logged;
* upload bodies are sent with ``sendfile`` where the connection allows
  (:mod:`dqrxfer.sendfile`);
* the environment (proxy variables, ``REQUESTS_CA_BUNDLE``) is read once per
  session and host, not for every request as requests does: over a gigabyte
  of 8 MiB PATCHes that lookup alone cost about 5 % of the upload time.

Sessions are not shared between threads: uploads that run at once each make
their own with a :data:`SessionFactory`.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from . import __version__
from .sendfile import SendfileAdapter
from .timeouts import Timeouts

#: Makes a fresh, configured session (one per thread of work).
SessionFactory = Callable[[], requests.Session]


def user_agent() -> str:
    return f"dqrxfer/{__version__} python-requests/{requests.__version__} ({platform.system()})"


class TimeoutSession(requests.Session):
    """A session that gives every request the configured timeouts unless the
    caller passes its own."""

    def __init__(self, timeouts: Timeouts) -> None:
        super().__init__()
        self.timeouts = timeouts
        self._environment: dict[tuple[Any, ...], dict[str, Any]] = {}

    # The stub types the result as a TypedDict private to it; this returns the
    # same keys in a plain dict, a copy the caller may change.
    def merge_environment_settings(  # type: ignore[override]
        self,
        url: str,
        proxies: Mapping[str, str] | None,
        stream: bool | None,
        verify: bool | str | None,
        cert: Any,
    ) -> dict[str, Any]:
        """requests' merge of the request's settings, the session's and the
        environment's, remembered per scheme and host and per settings."""
        key = (
            urlsplit(url)[:2],
            _items(proxies),
            stream,
            verify,
            cert,
            _items(self.proxies),
            self.stream,
            self.verify,
            self.cert,
            self.trust_env,
        )
        merged: dict[str, Any] | None
        remember = True
        try:
            merged = self._environment.get(key)
        except TypeError:  # a setting that cannot be a key (a list): not remembered
            merged, remember = None, False
        if merged is None:
            merged = dict(
                super().merge_environment_settings(
                    url, dict(proxies) if proxies is not None else None, stream, verify, cert
                )
            )
            if remember:
                self._environment[key] = merged
        return {**merged, "proxies": dict(merged["proxies"])}

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeouts.as_requests()
        return super().request(method, url, *args, **kwargs)


def _items(mapping: Mapping[str, str] | None) -> frozenset[tuple[str, str]] | None:
    return None if mapping is None else frozenset(mapping.items())


def make_session(
    auth: requests.auth.AuthBase | None = None,
    timeouts: Timeouts | None = None,
    verify: bool | str = True,
) -> requests.Session:
    """A session with timeouts, no hidden retries and ``auth`` attached."""
    session = TimeoutSession(timeouts or Timeouts())
    adapter = SendfileAdapter(max_retries=0, pool_connections=4, pool_maxsize=8)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent()
    session.auth = auth
    session.verify = verify
    return session


def session_factory(
    make_auth: Callable[[], requests.auth.AuthBase | None] | None = None,
    timeouts: Timeouts | None = None,
    verify: bool | str = True,
) -> SessionFactory:
    """A :data:`SessionFactory` making sessions that share these settings.

    ``make_auth`` is called once per session: auth objects keep per-host
    state (a Kerberos security context) that threads must not share.
    """

    def factory() -> requests.Session:
        auth = make_auth() if make_auth is not None else None
        return make_session(auth=auth, timeouts=timeouts, verify=verify)

    return factory


class WarmSessions:
    """Sessions whose connection is open already, kept for the next upload.

    The comparison with the server's copy (links API) and the capabilities
    asked early (OPTIONS) each open a connection before any upload starts;
    handing those sessions to the first uploads saves a connection set-up (a
    round trip, more with TLS) on a long link.  Safe to use from several
    threads; each session is handed to one taker only.
    """

    def __init__(self, factory: SessionFactory) -> None:
        self._factory = factory
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def keep(self, *sessions: requests.Session) -> None:
        with self._lock:
            self._sessions += sessions

    def take(self) -> requests.Session:
        """A kept session (the last kept first), or a new one."""
        with self._lock:
            if self._sessions:
                return self._sessions.pop()
        return self._factory()

    def close(self) -> None:
        """Close the sessions nobody took."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
