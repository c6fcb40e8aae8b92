"""Running the app under gunicorn with threaded workers.

A sync worker is killed after 30 s without finishing a request, which is a
normal slow upload here, so ``serve`` uses gthread workers and a long timeout.
The app is built in each worker (not before the fork): database connections
and file handles must not be shared between processes.

Settings are layered: the built-in defaults below, then an optional gunicorn
configuration file (``serve --gunicorn-config``, e.g. ``ops/gunicorn.conf.py``),
then what was given on the command line.  The address to bind always comes
from ``--host``/``--port``, so the checks ``serve`` makes on it hold.
"""

from __future__ import annotations

import os
import runpy
from typing import Any

from gunicorn.app.base import BaseApplication

from .app import create_app
from .config import Settings
from .reports.recovery import start_recovery


def _child_exit(_server: Any, worker: Any) -> None:
    """A worker ended: drop its live gauges from the shared metrics."""
    from .tus.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def _heartbeat_directory() -> str | None:
    """Where workers keep the file whose timestamp tells the arbiter they are
    alive: memory (``/dev/shm``) where there is one.  Each turn of a worker's
    loop updates that file, and on a disk filesystem the update can wait for
    a journal commit that the server's own fsyncs started (gunicorn's
    documentation of ``worker_tmp_dir`` recommends the same)."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


DEFAULT_OPTIONS: dict[str, Any] = {
    "workers": 2,
    "threads": 8,
    "timeout": 3600,
    "graceful_timeout": 30,
    "keepalive": 75,
    "accesslog": "-",
    "errorlog": "-",
    "loglevel": "info",
    # X-Forwarded-* are honoured by the app, from its trusted_proxies only
    # (server/proxy.py); gunicorn would trust X-Forwarded-Proto from loopback.
    # A gunicorn config file may still set its own.
    "forwarded_allow_ips": "",
    # prometheus_client's multiprocess mode: forget a dead worker's live gauges.
    "child_exit": _child_exit,
    "worker_tmp_dir": _heartbeat_directory(),
}


class GunicornServer(BaseApplication):  # type: ignore[misc]
    def __init__(
        self, settings: Settings, options: dict[str, Any], config_file: str | None = None
    ) -> None:
        self.settings = settings
        self.options = options
        self.config_file = config_file
        super().__init__()

    def load_config(self) -> None:
        layers: list[dict[str, Any]] = [DEFAULT_OPTIONS]
        if self.config_file:
            layers.append(runpy.run_path(self.config_file))
        layers.append(self.options)
        for layer in layers:
            for key, value in layer.items():
                if key in self.cfg.settings and value is not None:
                    self.cfg.set(key, value)

    def load(self):  # type: ignore[no-untyped-def]
        app = create_app(self.settings, check_schema=False)
        start_recovery(app)
        return app


def gunicorn_options(
    host: str,
    port: int,
    workers: int | None = None,
    threads: int | None = None,
    timeout: int | None = None,
) -> dict[str, Any]:
    """The options that win over every other layer (``None`` leaves a setting
    to the configuration file or the defaults)."""
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "timeout": timeout,
        # Threads, not processes, carry slow uploads; the app needs no other worker.
        "worker_class": "gthread",
        # gunicorn 25+ opens a control socket under $HOME by default: not wanted for a service.
        "control_socket_disable": True,
    }
