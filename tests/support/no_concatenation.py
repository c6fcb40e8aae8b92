"""A gunicorn configuration file (``dqrxfer-server serve --gunicorn-config``)
that makes the real server look like a tus server without the concatenation
extension: ``concatenation`` and ``concatenation-unfinished`` (or the
extensions ``$DQRXFER_TEST_HIDDEN_EXTENSIONS`` names, comma-separated) are
taken out of the ``Tus-Extension`` header of every answer, so clients fall
back to what they do without them.  For tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

HIDDEN = frozenset(
    name.strip()
    for name in os.environ.get(
        "DQRXFER_TEST_HIDDEN_EXTENSIONS", "concatenation,concatenation-unfinished"
    ).split(",")
)


def without_concatenation(value: str) -> str:
    return ",".join(
        name.strip() for name in value.split(",") if name.strip() and name.strip() not in HIDDEN
    )


def post_worker_init(worker: Any) -> None:
    app: Callable[..., Iterable[bytes]] = worker.wsgi

    def hiding(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers = [
                (name, without_concatenation(value) if name.lower() == "tus-extension" else value)
                for name, value in headers
            ]
            return start_response(status, headers, exc_info)

        return app(environ, start)

    worker.wsgi = hiding
