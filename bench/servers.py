"""The servers a benchmark compares, each started fresh on a free loopback port."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tests.support.listening import listening_among
from tests.support.live import free_port, serve_command, stop_group

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


#: A stopped server's scratch directory holding at most this much is removed
#: only when the benchmark ends (see :meth:`Server.stop`).
KEEP_UNTIL_EXIT = 256 * 1024 * 1024
_kept: list[Path] = []


@atexit.register
def _remove_kept() -> None:
    for path in _kept:
        shutil.rmtree(path, ignore_errors=True)


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants; empty if it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(pid: int) -> int:
    """Resident memory of a process and its descendants, in bytes, now."""
    total = 0
    for process in process_tree(pid):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS summed, PSS summed) of a process tree, in bytes: the proportional
    set size counts a page shared by n processes (a forked worker's pages
    still shared with its master) as 1/n in each, so the sum is what the
    tree holds."""
    rss = pss = 0
    for process in process_tree(pid):
        try:
            with open(f"/proc/{process.pid}/smaps_rollup") as rollup:
                for line in rollup:
                    key, _, rest = line.partition(":")
                    if key == "Rss":
                        rss += int(rest.split()[0]) * 1024
                    elif key == "Pss":
                        pss += int(rest.split()[0]) * 1024
        except OSError:
            continue
    return rss, pss


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants, now."""
    total = 0.0
    for process in process_tree(pid):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class Server:
    """Base: a process group started in a scratch directory."""

    name = "server"
    tus_path = "/files/"
    #: CPUs the server (and every process it starts) may run on; None: any.
    cpus: set[int] | None = None

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir = Path(
            tempfile.mkdtemp(prefix=f"bench-{self.name}-", dir=os.environ.get("BENCH_TMP"))
        )

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> Server:
        self.port = free_port()
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
            cwd=self.workdir,
            preexec_fn=self._pin if self.cpus else None,
        )
        wait_port(self.port, self.process)
        self.ready()
        return self

    def _pin(self) -> None:
        assert self.cpus is not None
        os.sched_setaffinity(0, self.cpus)

    def ready(self) -> None:
        """Hook for servers that accept connections before they can serve."""

    def rss(self) -> int:
        """Resident memory of the whole process tree, in bytes."""
        assert self.process is not None
        return tree_rss(self.process.pid)

    def memory(self) -> tuple[int, int]:
        """RSS and PSS of the whole process tree, in bytes."""
        assert self.process is not None
        return tree_memory(self.process.pid)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the whole process tree so far, in seconds."""
        assert self.process is not None
        return tree_cpu(self.process.pid)

    def stop(self) -> None:
        stop_group(self.process)
        self._clear_up()

    def _clear_up(self) -> None:
        """Remove the scratch directory without charging the next run for it.

        What a run leaves behind must not slow the run after it, which may be
        another server's: a server that fsyncs nothing leaves its data to be
        written back, and deleting files costs later, in the journal commit
        that an fsyncing server's next fsync forces (with the ``discard``
        mount option, every freed extent is trimmed there) and in ext4's
        inode allocator, which skips inodes freed in the last 30 s.  So the
        small directories of small-upload runs are removed only when the
        benchmark ends, large ones now, and everything is synced before the
        next server starts."""
        if _tree_size(self.workdir) <= KEEP_UNTIL_EXIT:
            _kept.append(self.workdir)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        os.sync()


def _tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


class Dqrxfer(Server):
    name = "dqrxfer"

    def __init__(
        self,
        workers: int = 4,
        threads: int = 8,
        extra: list[str] | None = None,
        pythonpath: str | None = None,
        fsync: str | None = None,
    ) -> None:
        super().__init__()
        self.workers, self.threads, self.extra = workers, threads, extra or []
        #: the configuration's fsync policy, if not the default (``complete``)
        self.fsync = fsync
        #: a directory holding another version of the ``dqrxfer`` package
        #: (an earlier commit's), imported instead of the installed one
        self.pythonpath = pythonpath

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(
                part for part in (self.pythonpath, env.get("PYTHONPATH")) if part
            )
        return env

    def command(self) -> list[str]:
        threads = ["--threads", str(self.threads)]
        config: list[str] = []
        if self.fsync is not None:
            path = self.workdir / "server.toml"
            # As the embedded default: the database made at the first start.
            path.write_text(f'fsync = "{self.fsync}"\nauto_upgrade = true\n')
            config = ["--config", str(path)]
        return serve_command(
            self.port, self.workdir / "data", *threads, *config, *self.extra, workers=self.workers
        )

    def ready(self) -> None:
        import urllib.request

        wait_workers_listening(self, self.workers)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/ping", timeout=2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("dqrxfer did not answer its ping")


def wait_workers_listening(server: Server, workers: int, timeout: float = 60) -> None:
    """Wait until ``workers`` processes of ``server`` listen on its port.

    gunicorn's workers each bind the port themselves (``reuse_port``), the
    first one as soon as it has started: connections made before the others
    bound theirs would all go to the first, and a run would measure one
    worker instead of the server."""
    assert server.process is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(listening_among(process_tree(server.process.pid), server.port)) >= workers:
            return
        time.sleep(0.02)
    raise RuntimeError(f"{server.name}: {workers} workers did not all listen within {timeout}s")


class TusLayer(Server):
    """The tus blueprint alone (``bench/tus_layer_app.py``): what @tus/server does."""

    name = "tus-layer"

    def __init__(self, workers: int = 4, threads: int = 8, fsync: str = "complete") -> None:
        super().__init__()
        self.workers, self.threads, self.fsync = workers, threads, fsync

    def command(self) -> list[str]:
        return [
            str(BIN / "python"),
            str(HERE / "tus_layer_app.py"),
            "--port",
            str(self.port),
            "--data-dir",
            str(self.workdir / "uploads"),
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
            "--fsync",
            self.fsync,
        ]

    def ready(self) -> None:
        wait_workers_listening(self, self.workers)


class LeanReport(Server):
    """The floor of a report upload's work (``bench/lean_report_app.py``)."""

    name = "lean-report"

    def __init__(self, workers: int = 4, threads: int = 8, fsync: str = "complete") -> None:
        super().__init__()
        self.workers, self.threads, self.fsync = workers, threads, fsync

    def command(self) -> list[str]:
        data = self.workdir / "data"
        config = self.workdir / "server.toml"
        config.write_text(f'fsync = "{self.fsync}"\n')
        upgrade = [str(BIN / "dqrxfer-server"), "db", "upgrade", "--config", str(config)]
        subprocess.run([*upgrade, "--data-dir", str(data)], check=True, capture_output=True)
        return [
            str(BIN / "python"),
            str(HERE / "lean_report_app.py"),
            "--port",
            str(self.port),
            "--data-dir",
            str(data),
            "--config",
            str(config),
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
        ]

    def ready(self) -> None:
        wait_workers_listening(self, self.workers)


class TusNode(Server):
    name = "tus-node"

    def command(self) -> list[str]:
        (self.workdir / "files").mkdir(exist_ok=True)
        return [
            "node",
            str(HERE / "js" / "tus-node-server.mjs"),
            str(self.port),
            str(self.workdir / "files"),
        ]


class Nginx(Server):
    """nginx receiving one plain PUT to disk (dav module): the machine's ceiling."""

    name = "nginx"
    put_path = "/put/payload.bin"

    def command(self) -> list[str]:
        root = self.workdir
        # nginx started as root runs its workers as nobody: let them write.
        root.chmod(0o755)
        for name in ("put", "body"):
            (root / name).mkdir(exist_ok=True)
            (root / name).chmod(0o777)
        config = root / "nginx.conf"
        config.write_text(
            f"""
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    client_max_body_size 0;
    client_body_buffer_size 1m;
    server {{
        listen 127.0.0.1:{self.port};
        location /put/ {{
            root {root};
            dav_methods PUT;
            create_full_put_path on;
        }}
    }}
}}
"""
        )
        return [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(config), "-p", str(root)]
