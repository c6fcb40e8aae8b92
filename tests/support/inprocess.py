"""The fast tier: the real app (``create_app(settings)``, real stores and
database on disk) in the test's own process, driven through Flask's test client.

Tests of the protocol's header rules, validation and API parameters need the
app's answers, not gunicorn: :class:`InProcessServer` stands where a
:class:`~support.live.LiveServer` would (``url``, ``data_dir``, ``published``),
and :func:`serve_in_process` routes ``requests`` calls for its URL to the app's
``test_client()``, so the shared helpers (``support.tus``) and the tests'
assertions stay as they are.  Crash, concurrency, socket and client tests keep
the live server.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from dqrxfer.server.app import create_app
from dqrxfer.server.config import load_settings
from dqrxfer.server.reports.recovery import start_recovery
from dqrxfer.server.services import services

from .live import ReportPaths

_hosts = itertools.count(1)


@dataclass
class InProcessServer(ReportPaths):
    """The app of ``dqrxfer-server serve --data-dir DATA [--config CONFIG]``,
    built as ``serve`` builds it (with its recovery pass), without gunicorn."""

    data_dir: Path
    config: Path | None = None
    app: Flask = field(init=False)
    host: str = field(init=False)

    def __post_init__(self) -> None:
        self.app = create_app(load_settings(self.config, self.data_dir))
        built = services(self.app)
        start_recovery(built.reports, built.uploads).join()  # a worker's pass, before requests
        # A name of its own (never resolved): requests for it go to this app.
        self.host = f"inprocess-{next(_hosts)}.test"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def dispose(self) -> None:
        """Close the app's database connections."""
        services(self.app).close()


class TestClientAdapter(BaseAdapter):
    """A ``requests`` transport that hands each request to a Flask test client."""

    def __init__(self, app: Flask) -> None:
        super().__init__()
        self.client = app.test_client()

    def send(  # type: ignore[override]  # stream, timeout, ... are all taken as **_
        self, request: requests.PreparedRequest, **_: Any
    ) -> requests.Response:
        parts = urlsplit(request.url or "")
        body: Any = request.body  # bytes, str, a file or an iterable of bytes
        if hasattr(body, "read"):
            body = body.read()
        elif body is not None and not isinstance(body, bytes | str):
            body = b"".join(body)
        answer = self.client.open(
            parts.path,
            method=request.method or "GET",
            query_string=parts.query,
            headers=list(request.headers.items()),
            data=body,
            base_url=f"{parts.scheme}://{parts.netloc}",
        )
        response = requests.Response()
        response.status_code = answer.status_code
        response.reason = answer.status.split(" ", 1)[1] if " " in answer.status else ""
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        for name, value in answer.headers.items():  # repeated ones joined, as urllib3 does
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        response.headers = headers
        response.raw = io.BytesIO(answer.get_data())
        response.url = request.url or ""
        response.request = request
        response.connection = self
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        answer.close()
        return response

    def close(self) -> None:
        pass


@contextmanager
def serve_in_process(servers: Mapping[str, InProcessServer] | InProcessServer) -> Iterator[None]:
    """Within the block, ``requests`` (any session, the module functions too)
    sends requests for the servers' URLs to their apps."""
    if isinstance(servers, InProcessServer):
        servers = {servers.url: servers}
    adapters = {url: TestClientAdapter(server.app) for url, server in servers.items()}
    original = requests.Session.get_adapter

    def get_adapter(session: requests.Session, url: str) -> BaseAdapter:
        for prefix, adapter in adapters.items():
            if url.startswith(prefix):
                return adapter
        return original(session, url)

    # On the class, for the module functions (requests.get, ...) make their own sessions.
    requests.Session.get_adapter = get_adapter  # type: ignore[method-assign]
    try:
        yield
    finally:
        requests.Session.get_adapter = original  # type: ignore[method-assign]


@contextmanager
def in_process_server(data_dir: Path, config: Path | None = None) -> Iterator[InProcessServer]:
    """An :class:`InProcessServer` reachable with ``requests`` for the block."""
    server = InProcessServer(data_dir, config)
    try:
        with serve_in_process(server):
            yield server
    finally:
        server.dispose()
