"""Running the app under gunicorn with threaded workers.

A sync worker is killed after 30 s without finishing a request, which is a
normal slow upload here, so ``serve`` uses gthread workers and a long timeout.
The app is built in each worker (not before the fork): database connections
and file handles must not be shared between processes.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from .app import create_app
from .config import Settings


class GunicornServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self):  # type: ignore[no-untyped-def]
        return create_app(self.settings, check_schema=False)


def gunicorn_options(
    host: str, port: int, workers: int, threads: int, timeout: int = 3600
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": timeout,
        "graceful_timeout": 30,
        "keepalive": 75,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": "info",
    }
    options["control_socket_disable"] = True
    return options
