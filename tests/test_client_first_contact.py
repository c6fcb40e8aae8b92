"""A first contact with a server: the first upload is made while OPTIONS is on
its way (capabilities assumed, see dqrxfer.assumed), and made again when the
server's answer says otherwise.  The real app in process (its OPTIONS held
until an upload is made: a client that waits for OPTIONS before creating the
upload cannot pass), and the real server behind ``dqr-upload``."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from dqrxfer.assumed import EXPECTED, sends_alike
from dqrxfer.resume import ResumeStore
from dqrxfer.transport import Capabilities, TusClient
from dqrxfer.upload import ReportTarget, ReportUploader, UploadOptions
from support.cli import run_cli
from support.inprocess import InProcessServer, serve_in_process
from support.live import LiveServer
from support.request_log import requests_of
from support.tus import dqr_upload_command

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: How long OPTIONS is held at most waiting for a creation (a bound, not a pace).
PATIENCE = 30.0


class OptionsHeldUntilCreation:
    """WSGI middleware: OPTIONS is answered only once an upload was created
    (POST) or after :data:`PATIENCE` seconds; ``events`` says in which order."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self.created = threading.Event()
        self.events: list[str] = []
        self.lock = threading.Lock()

    def note(self, event: str) -> None:
        with self.lock:
            self.events.append(event)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS":
            self.note("OPTIONS asked")
            self.created.wait(PATIENCE)
            self.note("OPTIONS answered")
        elif method == "POST" and environ["PATH_INFO"].startswith("/files"):
            self.note("POST")
            self.created.set()
        return self.app(environ, start_response)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private client cache: no capabilities remembered from elsewhere."""
    monkeypatch.setenv("DQRXFER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("size", [200_000, 70 * 1024 * 1024], ids=["hashed-first", "partial"])
def test_the_first_upload_is_made_while_options_is_asked(
    app_server: InProcessServer, tmp_path: Path, cache_dir: Path, size: int
) -> None:
    path = tmp_path / "data.bin"
    with open(path, "wb") as handle:
        for start in range(0, size, 1 << 20):
            handle.write(os.urandom(min(1 << 20, size - start)))
    held = OptionsHeldUntilCreation(app_server.app.wsgi_app)
    app_server.app.wsgi_app = held  # type: ignore[method-assign]
    uploader = ReportUploader(
        app_server.url,
        ReportTarget("O4", "S230518h", "llo", 1),
        UploadOptions(),
        store=ResumeStore(cache_dir / "uploads"),
    )
    with serve_in_process(app_server):
        _, outcomes = uploader.settle_and_upload([uploader.plan(path)])
    (outcome,) = outcomes
    assert outcome.error is None, outcome.error
    # The upload was created while OPTIONS waited, not after its answer.
    assert held.events.index("POST") < held.events.index("OPTIONS answered"), held.events
    assert held.events.count("POST") == (1 if size < 64 * 1024 * 1024 else 2)  # + the final
    published = app_server.published("data.bin").read_bytes()
    assert hashlib.sha256(published).digest() == hashlib.sha256(path.read_bytes()).digest()


def with_extensions(caps: Capabilities, *drop: str) -> Capabilities:
    return Capabilities(
        caps.versions, caps.extensions - set(drop), caps.checksum_algorithms, caps.max_size
    )


def test_what_the_server_answers_decides_whether_the_upload_made_goes_on(
    app_server: InProcessServer,
) -> None:
    with serve_in_process(app_server), requests.Session() as session:
        answer = TusClient(session, f"{app_server.url}/files/").capabilities()
    # What the client assumes is what the server answers with its defaults.
    assert sends_alike(100, EXPECTED, answer)
    assert EXPECTED.extensions <= answer.extensions
    # Extensions the client does not use change nothing.
    assert sends_alike(100, EXPECTED, with_extensions(answer, "expiration", "termination"))
    assert not sends_alike(100, EXPECTED, with_extensions(EXPECTED, "concatenation"))
    assert not sends_alike(100, EXPECTED, with_extensions(EXPECTED, "concatenation-unfinished"))
    assert not sends_alike(100, EXPECTED, with_extensions(EXPECTED, "block-checksum"))
    assert not sends_alike(100, EXPECTED, with_extensions(EXPECTED, "creation-with-upload"))
    sha1_only = Capabilities(EXPECTED.versions, EXPECTED.extensions, ("sha1",), None)
    assert not sends_alike(100, EXPECTED, sha1_only)
    limited = Capabilities(EXPECTED.versions, EXPECTED.extensions, ("crc32",), 100)
    assert sends_alike(100, EXPECTED, limited) and not sends_alike(101, EXPECTED, limited)


@pytest.fixture
def logged_plain_server(data_dir: Path, tmp_path: Path) -> Iterator[LiveServer]:
    """The real server without the concatenation extensions in its answers,
    each request in its access log."""
    support = Path(__file__).parent / "support"
    config = tmp_path / "gunicorn_config.py"
    config.write_text(
        "import runpy\n"
        f"hiding = runpy.run_path({str(support / 'no_concatenation.py')!r})\n"
        "post_worker_init = hiding['post_worker_init']\n"
        "access_log_format = "
        f"runpy.run_path({str(support / 'request_log.py')!r})['access_log_format']\n"
    )
    server = LiveServer(data_dir, extra_args=["--gunicorn-config", str(config)]).start()
    yield server
    server.discard()


def test_an_upload_made_for_capabilities_the_server_lacks_is_terminated_and_made_again(
    logged_plain_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    done = run_cli(*dqr_upload_command(logged_plain_server.url, str(big_file)), env=client_env)
    assert done.returncode == 0, done.stderr
    sent = [r for r in requests_of(logged_plain_server.log()) if r.path.startswith("/files")]
    methods = [r.method for r in sent]
    # A partial upload was assumed (a 64 MiB file for a server with
    # concatenation): made, terminated without a byte, then one upload.
    assert methods.count("DELETE") == 1 and methods.count("POST") == 2, methods
    deleted = next(r.path for r in sent if r.method == "DELETE")
    assert not any(r.method == "PATCH" and r.path == deleted for r in sent)
    assert sum(r.length or 0 for r in sent if r.method == "PATCH") == big_file.stat().st_size
    published = logged_plain_server.published("big.bin")
    assert hashlib.sha256(published.read_bytes()).digest() == (
        hashlib.sha256(big_file.read_bytes()).digest()
    )
