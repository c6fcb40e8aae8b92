"""A real browser for tests: Debian's headless Chromium driven by playwright-core
(``tests/js/browser.mjs``), and a second web server on another origin that
serves test pages the way a report page would be served."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .live import free_port

JS_DIR = Path(__file__).resolve().parent.parent / "js"
CHROMIUM = os.environ.get("DQRXFER_CHROMIUM", "/usr/bin/chromium")


def require_browser() -> None:
    """Skip (or, in CI, fail) when the browser or the npm packages are missing."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    if not (JS_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/js/node_modules (npm ci in tests/js)")
    if shutil.which("node") is None:
        missing.append("node")
    if missing:
        message = f"browser tests need {', '.join(missing)}: run ops/dev/bootstrap.sh --test"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def run_browser(
    pages: list[dict[str, Any]],
    work: Path,
    timeout: float = 240,
    on_signal: Callable[[], None] | None = None,
    cookies: list[dict[str, Any]] | None = None,
) -> list[dict]:
    """Visit ``pages`` in one fresh Chromium profile; one result per page.

    A page with a ``signal`` file makes the driver create that file once the
    page is done; ``on_signal`` then runs here (to change the server's data)
    and the driver waits for the page's ``then`` condition.  ``cookies``
    (Playwright's form: name, value, domain, path, httpOnly, sameSite, ...)
    are in the profile before the first page."""
    profile = work / f"chromium-profile-{free_port()}"
    profile.mkdir(parents=True)
    job = profile.with_suffix(".json")
    job.write_text(
        json.dumps(
            {
                "userDataDir": str(profile),
                "cookies": cookies or [],
                "pages": pages,
            }
        )
    )
    with subprocess.Popen(
        ["node", str(JS_DIR / "browser.mjs"), str(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=JS_DIR,
    ) as driver:
        signals = [Path(page["signal"]) for page in pages if page.get("signal")]
        deadline = time.monotonic() + timeout
        for signal in signals:
            while not signal.exists() and driver.poll() is None:
                assert time.monotonic() < deadline, f"browser never reached {signal}"
                time.sleep(0.05)
            if signal.exists() and on_signal is not None:
                on_signal()
        try:
            stdout, stderr = driver.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            driver.kill()
            raise
    assert driver.returncode == 0, stderr
    return json.loads(stdout)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class PageServer:
    """Serves a directory on ``http://localhost:<port>``: another origin than the
    API server on 127.0.0.1, as report pages are on other hosts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.port}"

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
        if self.thread.is_alive():
            warnings.warn("page server thread did not stop", stacklevel=2)
