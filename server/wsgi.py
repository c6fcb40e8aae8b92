"""Running the app under gunicorn with threaded workers.

A sync worker is killed after 30 s without finishing a request, which is a
normal slow upload here, so ``serve`` uses gthread workers and a long timeout.
The app is built once, in the master, before it forks the workers
(``preload_app``): the workers share the pages of the modules and of the app
instead of each building its own (the whole server's proportional set size
fell from 140 to 86 MiB at rest, 4 workers).  Nothing that must not cross a
fork does: the master closes the database's connections after building the
app, each worker drops the pool it inherited and starts its own recovery pass
(:func:`_post_worker_init`), thread pools are made per process
(:mod:`.tus.pools`), lock files are opened per lock (:mod:`.tus.locker`) and
the Prometheus values of each worker go to files named by its pid.

Settings are layered: the built-in defaults below, then an optional gunicorn
configuration file (``serve --gunicorn-config``, e.g. ``ops/gunicorn.conf.py``),
then what was given on the command line.  The address to bind always comes
from ``--host``/``--port``, so the checks ``serve`` makes on it hold.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import runpy
import socket
import time
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from .app import create_app
from .config import Settings
from .reports.recovery import start_recovery
from .services import services


def _child_exit(_server: Any, worker: Any) -> None:
    """A worker ended: drop its live gauges from the shared metrics."""
    from .tus.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def _post_worker_init(worker: Any) -> None:
    """A worker is ready to serve: see :meth:`GunicornServer.start_worker`
    (other applications that take these options, such as the benchmarks'
    tus layer, have nothing to start)."""
    if isinstance(worker.app, GunicornServer):
        worker.app.start_worker(worker.wsgi)


def _heartbeat_directory() -> str | None:
    """Where workers keep the file whose timestamp tells the arbiter they are
    alive: memory (``/dev/shm``) where there is one.  Each turn of a worker's
    loop updates that file, and on a disk filesystem the update can wait for
    a journal commit that the server's own fsyncs started (gunicorn's
    documentation of ``worker_tmp_dir`` recommends the same)."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


#: The gunicorn logger class of ``serve`` and ``ops/gunicorn.conf.py``.
ACCESS_LOGGER = "dqrxfer.server.accesslog.AccessLogger"

DEFAULT_OPTIONS: dict[str, Any] = {
    # As ops/gunicorn.conf.py.  Processes, not only threads: the Python work
    # of requests in one process takes turns on its GIL (with 8 busy
    # connections in one worker, 478 futex calls per upload against 68 with
    # one); 4 workers took 8 clients' small uploads from 276 to 450 per second.
    "workers": 4,
    # Each PATCH holds a thread while its body streams in, minutes over a
    # slow link: 4 x 320 threads hold 1,216 request bodies at once, and keep
    # 16 threads per worker for requests without a body (server/worker.py;
    # bench/capacity_bench.py, docs/operators/scaling.md).  A thread waiting
    # on its socket costs memory (about 0.13 MiB), not CPU.
    "threads": 320,
    # Connections per worker, in flight and idle keep-alive.
    "worker_connections": 2000,
    "timeout": 3600,
    "graceful_timeout": 30,
    "keepalive": 75,
    "accesslog": "-",
    "errorlog": "-",
    "loglevel": "info",
    # gunicorn's logger, computing only the atoms the access line's format
    # names (server/accesslog.py): the same line for less work per request.
    "logger_class": ACCESS_LOGGER,
    # prometheus_client's multiprocess mode: forget a dead worker's live gauges.
    "child_exit": _child_exit,
    # The app is built once, before the fork (see the module's docstring).
    # A reload (HUP) then replaces the workers with forks of the same app:
    # a new version of the code takes a restart (it took one before too:
    # ``serve`` reads its settings once).
    "preload_app": True,
    "post_worker_init": _post_worker_init,
    "worker_tmp_dir": _heartbeat_directory(),
    # One listening socket, shared by the workers: a worker whose threads are
    # all busy stops accepting (server/worker.py), so the others take the new
    # connections.  With a socket per worker (SO_REUSEPORT) the kernel picks
    # the worker by a hash of the connection, not by load: 24 slow uploads
    # were enough to leave pings unanswered for 5 s (4 workers x 8 threads).
    "reuse_port": False,
}


def _apply_layers(cfg: Any, layers: list[dict[str, Any]]) -> None:
    """Set gunicorn's settings from ``layers``, later ones winning (None: unset)."""
    for layer in layers:
        for key, value in layer.items():
            if key in cfg.settings and value is not None:
                cfg.set(key, value)


# gunicorn has no type information: its class is Any to mypy.
class FlaskServer(BaseApplication):  # type: ignore[misc]
    """The Flask app ``build`` returns, under gunicorn with ``serve``'s
    defaults (:data:`DEFAULT_OPTIONS`) and then ``options``: how the
    benchmarks serve the apps they set beside ``serve`` (``bench/``)."""

    def __init__(self, build: Callable[[], Flask], options: dict[str, Any]) -> None:
        self.build = build
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        _apply_layers(self.cfg, [DEFAULT_OPTIONS, self.options])

    def load(self) -> Flask:
        return self.build()


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
        _apply_layers(self.cfg, layers)

    def run(self) -> None:
        address = ListeningAddress(listening_urls(self.cfg.address, self.cfg.is_ssl))
        logging.getLogger("gunicorn.error").addFilter(address)
        try:
            super().run()
        finally:
            logging.getLogger("gunicorn.error").removeFilter(address)

    def load(self) -> Flask:
        app = create_app(self.settings, check_schema=False)
        built = services(app)
        if self.cfg.preload_app:
            # In the master, before the fork: no connection may be shared by
            # the workers, and the collector is kept off the objects built so
            # far (it would write to every page it visits in each worker,
            # copying the pages the workers share).
            built.database.dispose()
            gc.freeze()
        else:
            start_recovery(built.reports, built.uploads)
        return app

    def start_worker(self, app: Flask) -> None:
        """In a worker forked from a master that built the app (``preload_app``):
        drop the database connections it may have inherited (the master closed
        its own; the pool is the master's object) and start this worker's
        recovery pass, as :meth:`load` does without preloading."""
        if not self.cfg.preload_app:
            return
        built = services(app)
        built.database.engine.dispose(close=False)
        start_recovery(built.reports, built.uploads)


def listening_urls(addresses: list[Any], tls: bool) -> str:
    """The URLs of gunicorn's bind addresses (``(host, port)`` tuples, or the
    path of a Unix socket), as its ``Listening at:`` line should show them."""
    scheme = "https" if tls else "http"
    shown = []
    for address in addresses:
        if isinstance(address, tuple):
            host, port = address[0], address[1]
            host = f"[{host}]" if ":" in host else host
            shown.append(f"{scheme}://{host}:{port}")
        else:
            shown.append(f"unix:{os.fsdecode(address)}")
    return ",".join(shown)


class ListeningAddress(logging.Filter):
    """Fills in gunicorn's ``Listening at:  (pid)``: with a socket per worker
    (``reuse_port``) the arbiter has no socket of its own to name, so its line
    shows a blank address; it gets the URLs the workers bind instead."""

    def __init__(self, urls: str) -> None:
        super().__init__()
        self.urls = urls

    def filter(self, record: logging.LogRecord) -> bool:
        arguments = record.args
        if (
            isinstance(record.msg, str)
            and record.msg.startswith("Listening at: ")
            and isinstance(arguments, tuple)
            and arguments
            and arguments[0] == ""
        ):
            record.args = (self.urls, *arguments[1:])
        return True


def ensure_address_free(host: str, port: int, wait: float = 5.0) -> None:
    """Raise OSError if something listens on ``host:port`` (still, after
    ``wait`` seconds).

    gunicorn's own bind would fail too, but only after the workers' setup,
    with a less clear message; and with ``reuse_port`` (which a gunicorn
    configuration file may set) the kernel lets the workers share the
    address with any socket of the same user that set SO_REUSEPORT too, such
    as a second server on the same port: both would silently take turns
    answering.  A socket without SO_REUSEPORT cannot bind an address another
    socket listens on, so this probe finds such a neighbour first."""
    if port == 0:
        return
    deadline = time.monotonic() + wait
    while True:
        try:
            for family, kind, proto, _, address in socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            ):
                with socket.socket(family, kind, proto) as probe:
                    # As gunicorn's own sockets: connections of an earlier
                    # server still in TIME_WAIT do not make the address busy.
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind(address)
            return
        except OSError as error:
            # The workers of a server that was just killed notice within a
            # second that their master is gone, and close their sockets.
            if error.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


#: The gunicorn worker class of ``serve`` and ``ops/gunicorn.conf.py``.
WORKER_CLASS = "dqrxfer.server.worker.UploadWorker"


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
        # An IPv6 address in brackets, as gunicorn parses it (``[::1]:8080``).
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "timeout": timeout,
        # Threads, not processes, carry slow uploads: gunicorn's threaded
        # worker, which takes a thread only for a request that has arrived
        # and accepts only with a thread free (server/worker.py).
        "worker_class": WORKER_CLASS,
        # gunicorn 25+ opens a control socket under $HOME by default: not wanted for a service.
        "control_socket_disable": True,
        # X-Forwarded-* are honoured by the app alone, from its trusted_proxies
        # (server/proxy.py): gunicorn would trust X-Forwarded-Proto from
        # loopback by default, or from whatever a config file lists.
        "forwarded_allow_ips": "",
    }
