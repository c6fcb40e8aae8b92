"""``serve`` builds the app once, in gunicorn's master, before it forks the
workers (``preload_app``): the workers share its pages.  What must not cross
the fork does not: the master holds no database connection, and every worker
opens its own and serves uploads with it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import requests

from support.live import LiveServer
from support.tus import create, published, report_metadata, upload_id


def _open_files(process: psutil.Process) -> set[str]:
    """What the descriptors of ``process`` refer to."""
    directory = f"/proc/{process.pid}/fd"
    return {os.readlink(f"{directory}/{fd}") for fd in os.listdir(directory)}


def _database_files(process: psutil.Process, data_dir: Path) -> set[str]:
    """The files of the SQLite database (``dqrxfer.sqlite``, ``-wal``, ``-shm``)
    that ``process`` holds open."""
    prefix = str(data_dir / "dqrxfer.sqlite")
    return {path for path in _open_files(process) if path.startswith(prefix)}


def _workers(master: psutil.Process, count: int, timeout: float = 30) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while len(workers := master.children()) < count:
        assert time.monotonic() < deadline, f"fewer than {count} workers: {workers}"
        time.sleep(0.05)
    return workers


def test_the_master_builds_the_app_and_holds_no_database_connection(data_dir: Path) -> None:
    server = LiveServer(data_dir, workers=2).start()
    try:
        assert server.process is not None
        master = psutil.Process(server.process.pid)
        workers = _workers(master, 2)
        # Built in the master: it holds the files of its Prometheus values,
        # named by its pid, which the app's tus endpoint makes when it is built.
        held = _open_files(master)
        assert any(path.endswith(f"_{master.pid}.db") for path in held), held
        # Uploads on fresh connections; every one is published and recorded.
        for number in range(8):
            metadata = report_metadata(filename=f"preload-{number}.txt", revision=str(number))
            body = f"payload {number}\n".encode()
            response = create(server, len(body), metadata=metadata, body=body)
            assert response.status_code == 201, response.text
            assert published(server, metadata).read_bytes() == body
            record = requests.get(
                f"{server.url}/api/v1/uploads/{upload_id(response.headers['Location'])}",
                timeout=10,
            ).json()
            assert record["state"] == "published", record
        assert _database_files(master, data_dir) == set()
        serving = [worker for worker in workers if _database_files(worker, data_dir)]
        assert serving, "no worker holds the database open after serving uploads"
    finally:
        server.discard()
