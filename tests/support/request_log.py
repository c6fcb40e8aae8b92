"""A gunicorn configuration file (``dqrxfer-server serve --gunicorn-config``)
whose access log names, for every request, the tus offsets: the request's
``Upload-Offset`` and ``Content-Length``, and the answer's ``Upload-Offset``,
so that a test can tell from the server's side which pieces a client sent,
which it sent again and how it resumed.  For tests; :func:`requests_of` reads
the lines back."""

from __future__ import annotations

import re
from dataclasses import dataclass

MARK = "tus-request"
access_log_format = (
    f"{MARK} %(m)s %(U)s %(s)s offset=%({{upload-offset}}i)s "
    "length=%({content-length}i)s answer=%({upload-offset}o)s"
)
_LINE = re.compile(
    rf"{MARK} (?P<method>\S+) (?P<path>\S+) (?P<status>\d+) offset=(?P<offset>\S+) "
    r"length=(?P<length>\S+) answer=(?P<answer>\S+)"
)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int
    offset: int | None  # the request's Upload-Offset
    length: int | None  # its Content-Length
    answer: int | None  # the answer's Upload-Offset


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def requests_of(log: str) -> list[Request]:
    """The requests of a server log written with this configuration, in order."""
    return [
        Request(
            match["method"],
            match["path"],
            int(match["status"]),
            _number(match["offset"]),
            _number(match["length"]),
            _number(match["answer"]),
        )
        for match in _LINE.finditer(log)
    ]
