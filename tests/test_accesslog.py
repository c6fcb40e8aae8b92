"""The access logger (server/accesslog.py) writes gunicorn's own lines.

Requests are parsed by gunicorn's parser and their environ and response made
by gunicorn's WSGI layer, as a worker makes them; each line is rendered by
gunicorn's stock logger and by ours, through ``access()``, and compared.
"""

from __future__ import annotations

import logging
import runpy
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from gunicorn import glogging
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser
from gunicorn.http.wsgi import create

from dqrxfer.server.accesslog import AccessLogger, format_keys
from dqrxfer.server.wsgi import DEFAULT_OPTIONS
from support import request_log

OPS_CONFIG = Path(__file__).resolve().parent.parent / "ops" / "gunicorn.conf.py"
OPS_FORMAT: str = runpy.run_path(str(OPS_CONFIG))["access_log_format"]
EVERY_ATOM = " ".join(
    f"%({atom})s"
    for atom in [
        "h",
        "l",
        "u",
        "t",
        "r",
        "s",
        "m",
        "U",
        "q",
        "H",
        "b",
        "B",
        "f",
        "a",
        "T",
        "D",
        "M",
        "L",
        "p",
    ]
) + (
    ' "%({Upload-Offset}i)s" %({x-remote-user}I)s %({CONTENT-LENGTH}i)s %({absent}i)s'
    " %({upload-offset}o)s %({Tus-Resumable}o)s %({absent}o)s"
    " %({REMOTE_ADDR}e)s %({raw_uri}e)s %({absent}e)s %(unknown)s %%(h)s %(D)d %(M)05d"
)
FORMATS = [Config().access_log_format, OPS_FORMAT, request_log.access_log_format, EVERY_ATOM]

REQUESTS = [
    b"PATCH /files/abc?x=1 HTTP/1.1\r\nHost: h\r\nUpload-Offset: 0\r\n"
    b'X-Remote-User: alice"quoted\r\nContent-Length: 0\r\n'
    b"Authorization: Basic dXNlcjpzZWNyZXQ=\r\nUser-Agent: dqr-upload/1\r\n\r\n",
    # A repeated header: gunicorn's line shows the last one.
    b"POST /files/ HTTP/1.1\r\nHost: h\r\nX-Remote-User: one\r\nX-Remote-User: two\r\n"
    b"Referer: https://example.org/\r\nContent-Length: 0\r\n\r\n",
    # No header the formats name.
    b"GET /api/v1/ping HTTP/1.0\r\n\r\n",
]
ANSWERS = [
    ("204 No Content", [("Upload-Offset", "10"), ("Tus-Resumable", "1.0.0")]),
    ("201 Created", [("Location", "http://h/files/x"), ("Upload-Offset", "0")]),
    ("200 OK", [("Content-Type", "application/json")]),
]


class _Fixed:
    """The same date for both loggers (it is read from the clock)."""

    def now(self) -> str:
        return "[07/Dec/2026:01:02:03 +0000]"


class StockLogger(_Fixed, glogging.Logger):  # type: ignore[misc]
    pass


class OurLogger(_Fixed, AccessLogger):
    pass


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    access = logging.getLogger("gunicorn.access")
    access.addHandler(handler)
    yield handler
    access.removeHandler(handler)


def config(access_log_format: str) -> Config:
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", access_log_format)
    return cfg


def exchange(raw: bytes, answer: tuple[str, list[tuple[str, str]]], cfg: Config) -> tuple[Any, ...]:
    """gunicorn's request, response and environ for ``raw``, answered."""
    request = next(RequestParser(cfg, iter([raw]), ("192.0.2.7", 50000)))
    ours, _theirs = socket.socketpair()
    with ours, _theirs:
        response, environ = create(request, ours, ("192.0.2.7", 50000), ("127.0.0.1", 8080), cfg)
    response.start_response(*answer)
    response.sent = 1234
    return response, request, environ


@pytest.mark.parametrize("access_log_format", FORMATS)
def test_lines_are_gunicorns(access_log_format: str, lines: Lines) -> None:
    cfg = config(access_log_format)
    for raw, answer in zip(REQUESTS, ANSWERS, strict=True):
        response, request, environ = exchange(raw, answer, cfg)
        took = timedelta(seconds=1, microseconds=234567)
        StockLogger(cfg).access(response, request, environ, took)
        OurLogger(cfg).access(response, request, environ, took)
    stock, ours = lines.lines[0::2], lines.lines[1::2]
    assert len(stock) == len(REQUESTS)
    assert ours == stock
    assert all("secret" not in line for line in ours)


def test_every_atom_line_shows_each_kind_of_field(lines: Lines) -> None:
    """The comparison above covers what it should: the values are there."""
    cfg = config(EVERY_ATOM)
    response, request, environ = exchange(REQUESTS[1], ANSWERS[1], cfg)
    OurLogger(cfg).access(response, request, environ, timedelta(microseconds=5000))
    (line,) = lines.lines
    assert line.startswith("192.0.2.7 - - [07/Dec/2026:01:02:03 +0000] POST /files/ HTTP/1.1 201 ")
    assert " two " in line and " one " not in line  # the repeated header's last value
    assert "https://example.org/" in line and " 192.0.2.7 /files/ " in line
    assert " 0 - - " in line  # the answer's Upload-Offset, absent ones
    assert " - %(h)s 5000 00005" in line


def test_only_the_atoms_of_the_format_are_computed() -> None:
    cfg = config(OPS_FORMAT)
    response, request, environ = exchange(REQUESTS[0], ANSWERS[0], cfg)
    took = timedelta(milliseconds=3)
    ours = OurLogger(cfg).atoms(response, request, environ, took)
    stock = StockLogger(cfg).atoms(response, request, environ, took)
    assert set(ours) == {"h", "{x-remote-user}i", "r", "s", "b", "M", "{upload-offset}i", "a"}
    assert {key: stock[key] for key in ours} == ours
    assert len(stock) > 3 * len(ours)


def test_format_keys_are_read_as_python_formats_them() -> None:
    assert format_keys("%(h)s %%(u)s %(M)dms %({A}i)s %(h)s") == ("h", "M", "{A}i")


def test_serve_and_the_ops_config_use_it() -> None:
    name = f"{AccessLogger.__module__}.{AccessLogger.__qualname__}"
    assert DEFAULT_OPTIONS["logger_class"] == name
    assert runpy.run_path(str(OPS_CONFIG))["logger_class"] == name
    cfg = Config()
    cfg.set("logger_class", name)
    assert cfg.logger_class is AccessLogger
