"""Real server processes for tests: ``dqrxfer-server serve`` on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

BIN = Path(sys.executable).parent
#: A gunicorn configuration that hides the concatenation extensions (a server
#: as one without them answers), for ``LiveServer(extra_args=[...])``.
NO_CONCATENATION = Path(__file__).parent / "no_concatenation.py"
#: A gunicorn configuration that logs each request (support.request_log).
REQUEST_LOG = Path(__file__).parent / "request_log.py"


def tool(name: str) -> str:
    """Path of a console script installed beside the running interpreter."""
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name) or name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(port: int, data_dir: Path, *extra: str, workers: int | None = None) -> list[str]:
    """``dqrxfer-server serve`` on ``127.0.0.1:port`` with ``data_dir``
    (``workers`` of gunicorn: its default if None), ``extra`` after."""
    command = [tool("dqrxfer-server"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    if workers is not None:
        command += ["--workers", str(workers)]
    return [*command, "--data-dir", str(data_dir), *extra]


def stop_group(
    process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 30
) -> None:
    """Send ``sig`` to the process group that ``process`` leads (started with
    ``start_new_session``) and wait for it; SIGKILL the group if it has not
    ended within ``timeout`` seconds.  Nothing if it has ended already."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class ReportPaths:
    """Where a server with ``data_dir`` (embedded default) publishes reports."""

    data_dir: Path

    def published(
        self, name: str = "", revision: int = 1, graceid: str = "S230518h", site: str = "llo"
    ) -> Path:
        """Where the report ``<graceid>_<site>_<revision>`` of project O4 (the
        tests' report) puts ``name`` once published (its directory if no name)."""
        report = (
            self.data_dir / "reports" / "O4" / f"{graceid}_dir" / f"{graceid}_{site}_{revision}"
        )
        return report / name if name else report


@dataclass
class LiveServer(ReportPaths):
    data_dir: Path
    config: Path | None = None
    workers: int = 2
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        config = ["--config", str(self.config)] if self.config is not None else []
        return serve_command(
            self.port, self.data_dir, *config, *self.extra_args, workers=self.workers
        )

    def start(self, timeout: float = 30.0) -> LiveServer:
        self.port = self.port or free_port()
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        env = {**os.environ, **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Poll the ping endpoint until it answers (or the process dies)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/api/v1/ping", timeout=2).status_code < 500:
                    return
            except (requests.ConnectionError, requests.Timeout):
                # Not listening yet; or the workers share the master's listening
                # socket and a connection made before a worker is up waits in its
                # queue; or its first answer (a worker still importing, a database
                # to reach) is slower than one try on a loaded machine: ask again
                # until the deadline.
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def discard(self) -> None:
        """End a server whose data is thrown away with it (a fixture's teardown):
        SIGKILL to its process group is immediate, where gunicorn's graceful
        stop takes about 0.6 s, once per test that starts a server.  Under
        coverage.py (which measures the server's processes too) the graceful
        stop stays, for they write their data as they exit."""
        measured = "COVERAGE_PROCESS_CONFIG" in os.environ
        self.stop(signal.SIGTERM if measured else signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_group(self.process, sig)


def with_gunicorn_config(tmp_path: Path, text: str) -> LiveServer:
    """A one-worker server (not started) on a new data directory under
    ``tmp_path``, run with a gunicorn settings file holding ``text``."""
    gunicorn_config = tmp_path / "gunicorn.conf.py"
    gunicorn_config.write_text(text)
    data = tmp_path / "data"
    data.mkdir()
    return LiveServer(data, workers=1, extra_args=["--gunicorn-config", str(gunicorn_config)])
