"""gunicorn's logger, with each access line built from the atoms its format uses.

gunicorn's :meth:`~gunicorn.glogging.Logger.atoms` computes, for every
request, every atom it knows (the date, the request line, the user of a Basic
``Authorization``, ...) and one entry for each request header, response
header and environ variable (a WSGI environ holds dozens), then formats the
line with the few the format names: a per-request cost that grew with the
headers, for a line of six to nine fields.  :class:`AccessLogger` reads the
format's keys once (per format: a configuration reload may change it) and
computes those alone, with gunicorn's own rules, so the line is the same,
character for character (``tests/test_accesslog.py`` compares them): no field
is added, none dropped.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from gunicorn import glogging


class _KeyRecorder(dict[str, Any]):
    """A mapping that notes each key a ``%``-format asks it for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def __getitem__(self, key: str) -> Any:
        self.asked.append(key)
        return 0  # formats as %s, %d, %f alike


@functools.lru_cache(maxsize=8)
def format_keys(access_log_format: str) -> tuple[str, ...]:
    """The atom keys ``access_log_format`` uses, as Python's ``%`` operator
    parses them (so ``%%`` and conversions are read as they will be)."""
    recorder = _KeyRecorder()
    access_log_format % recorder
    return tuple(dict.fromkeys(recorder.asked))


_Atom = Callable[["AccessLogger", Any, Any, dict[str, Any], timedelta], Any]


def _status(resp: Any) -> Any:
    status = resp.status
    return status.split(None, 1)[0] if isinstance(status, str) else status


def _sent(resp: Any) -> str:
    sent = getattr(resp, "sent", None)
    return (sent is not None and str(sent)) or "-"


#: gunicorn's atoms (glogging.Logger.atoms), each computed alone.
_ATOMS: dict[str, _Atom] = {
    "h": lambda log, resp, req, environ, rt: environ.get("REMOTE_ADDR", "-"),
    "l": lambda log, resp, req, environ, rt: "-",
    "u": lambda log, resp, req, environ, rt: log._get_user(environ) or "-",
    "t": lambda log, resp, req, environ, rt: log.now(),
    "r": lambda log, resp, req, environ, rt: (
        f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}"
    ),
    "s": lambda log, resp, req, environ, rt: _status(resp),
    "m": lambda log, resp, req, environ, rt: environ.get("REQUEST_METHOD"),
    "U": lambda log, resp, req, environ, rt: environ.get("PATH_INFO"),
    "q": lambda log, resp, req, environ, rt: environ.get("QUERY_STRING"),
    "H": lambda log, resp, req, environ, rt: environ.get("SERVER_PROTOCOL"),
    "b": lambda log, resp, req, environ, rt: _sent(resp),
    "B": lambda log, resp, req, environ, rt: getattr(resp, "sent", None),
    "f": lambda log, resp, req, environ, rt: environ.get("HTTP_REFERER", "-"),
    "a": lambda log, resp, req, environ, rt: environ.get("HTTP_USER_AGENT", "-"),
    "T": lambda log, resp, req, environ, rt: rt.seconds,
    "D": lambda log, resp, req, environ, rt: (rt.seconds * 1000000) + rt.microseconds,
    "M": lambda log, resp, req, environ, rt: (rt.seconds * 1000) + int(rt.microseconds / 1000),
    "L": lambda log, resp, req, environ, rt: f"{rt.seconds:d}.{rt.microseconds:06d}",
    "p": lambda log, resp, req, environ, rt: f"<{os.getpid()}>",
}


def _pairs(headers: Any) -> Iterable[tuple[str, Any]]:
    if hasattr(headers, "headers"):  # gunicorn's Request
        headers = headers.headers
    if hasattr(headers, "items"):
        headers = headers.items()
    return headers  # type: ignore[no-any-return]


def _pick(pairs: Iterable[tuple[str, Any]], names: dict[str, str]) -> dict[str, Any]:
    """``{atom: value}`` for the pairs whose lowercased name is in ``names``
    (name -> atom); a repeated name's last value, as gunicorn's dict keeps."""
    found = {}
    for name, value in pairs:
        atom = names.get(name.lower())
        if atom is not None:
            found[atom] = value
    return found


class AccessLogger(glogging.Logger):  # type: ignore[misc]  # gunicorn is untyped
    """:class:`gunicorn.glogging.Logger` whose :meth:`atoms` holds only the
    atoms ``access_log_format`` uses (absent ones print ``-`` as before)."""

    def atoms(
        self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta
    ) -> dict[str, Any]:
        atoms: dict[str, Any] = {}
        wanted: dict[str, dict[str, str]] = {}
        for key in format_keys(self.cfg.access_log_format):
            compute = _ATOMS.get(key)
            if compute is not None:
                atoms[key] = compute(self, resp, req, environ, request_time)
            elif key.startswith("{") and len(key) > 3 and key[-2] == "}":
                # gunicorn's wrapper looks "{...}x" keys up lowercased.
                atom = key.lower()
                wanted.setdefault(atom[-1], {})[atom[1:-2]] = atom
        if "i" in wanted:
            atoms.update(_pick(_pairs(req), wanted["i"]))
        if "o" in wanted:
            atoms.update(_pick(_pairs(resp.headers), wanted["o"]))
        if "e" in wanted:
            atoms.update(_pick(environ.items(), wanted["e"]))
        return atoms
