"""``serve`` builds the app once, in gunicorn's master, before it forks the
workers (``preload_app``): the workers share its pages.  What must not cross
the fork does not: the master holds no database connection, and every worker
opens its own and serves uploads with it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import requests

from support.live import LiveServer
from support.tus import create, published, report_metadata, upload_id


def _open_files(process: psutil.Process) -> set[str]:
    """What the descriptors of ``process`` refer to."""
    directory = f"/proc/{process.pid}/fd"
    held = set()
    for fd in os.listdir(directory):
        try:
            held.add(os.readlink(f"{directory}/{fd}"))
        except FileNotFoundError:
            continue  # closed meanwhile
    return held


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


def _upload_and_check(server: LiveServer, number: int) -> None:
    """One report upload (creation with its bytes), published and recorded."""
    metadata = report_metadata(filename=f"preload-{number}.txt", revision=str(number))
    body = f"payload {number}\n".encode()
    response = create(server, len(body), metadata=metadata, body=body)
    assert response.status_code == 201, response.text
    assert published(server, metadata).read_bytes() == body
    record = requests.get(
        f"{server.url}/api/v1/uploads/{upload_id(response.headers['Location'])}", timeout=10
    ).json()
    assert record["state"] == "published", record


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
            _upload_and_check(server, number)
        assert _database_files(master, data_dir) == set()
        serving = [worker for worker in workers if _database_files(worker, data_dir)]
        assert serving, "no worker holds the database open after serving uploads"
    finally:
        server.discard()


def test_a_reload_forks_new_workers_from_the_same_app(data_dir: Path) -> None:
    """HUP (the unit's reload) replaces the workers with new forks of the app
    the master built; they serve uploads (and count them in the Prometheus
    directory, which an exiting worker used to remove), and the master still
    holds no database connection."""
    server = LiveServer(data_dir, workers=2).start()
    try:
        assert server.process is not None
        master = psutil.Process(server.process.pid)
        before = {worker.pid for worker in _workers(master, 2)}
        _upload_and_check(server, 0)
        master.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while True:
            now = {worker.pid for worker in master.children()}
            if len(now) == 2 and not now & before:
                break
            assert time.monotonic() < deadline, f"workers not replaced: {before} -> {now}"
            time.sleep(0.05)
        for number in range(1, 5):
            _upload_and_check(server, number)
        assert _database_files(master, data_dir) == set()
    finally:
        server.discard()
