"""What ``dqrxfer-server serve`` still answers while slow uploads hold its
threads, what a silent connection may hold, and how it stops
(server/worker.py, docs/operators/scaling.md)."""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from support.live import LiveServer
from support.seed import Seed, seed
from support.tus import (
    RawPatch,
    data_file,
    new_upload,
    offset_of,
    upload_id,
    wait_for,
    write_config,
)

WORKERS = 2
THREADS = 4  # per worker: 3 body slots and 1 thread kept for requests without a body
SLOW_UPLOADS = 24  # three times the pool's threads
LENGTH = 1024 * 1024
SENT = 4096  # what each slow upload sends before it stalls


def uploads_open(server: LiveServer) -> int:
    """Requests streaming a body right now, over all workers (``/metrics``)."""
    text = requests.get(f"{server.url}/metrics", timeout=60).text
    found = re.search(r"^dqrxfer_tus_uploads_open (\S+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def connections_held(server: LiveServer) -> int:
    """Established connections of the server's workers on its port."""
    assert server.process is not None
    total = 0
    for worker in psutil.Process(server.process.pid).children():
        try:
            total += sum(
                1
                for s in worker.net_connections(kind="tcp")
                if s.status == psutil.CONN_ESTABLISHED and s.laddr.port == server.port
            )
        except psutil.NoSuchProcess:
            continue
    return total


@pytest.fixture
def server(tmp_path: Path, data_dir: Path) -> Iterator[LiveServer]:
    config = write_config(tmp_path / "server.toml", header_timeout=8, read_timeout=600)
    live = LiveServer(
        data_dir, config=config, workers=WORKERS, extra_args=["--threads", str(THREADS)]
    )
    live.start()
    seed(f"sqlite:///{data_dir / 'dqrxfer.sqlite'}", [Seed("S230518h", "llo", 1)])
    try:
        yield live
    finally:
        live.discard()


def test_ping_and_links_answer_beside_more_slow_uploads_than_threads(server: LiveServer) -> None:
    urls = [new_upload(server, LENGTH) for _ in range(SLOW_UPLOADS)]
    slow = [RawPatch(url, 0, LENGTH) for url in urls]
    try:
        for patch in slow:
            patch.send(b"x" * SENT)
        # The server holds every slow upload's connection, and the body slots
        # of at least one worker stream bodies (of both, unless one worker
        # took every connection of the burst): the others wait for a slot.
        wait_for(lambda: connections_held(server) >= SLOW_UPLOADS, what="every upload connected")
        wait_for(lambda: uploads_open(server) >= THREADS - 1, what="a worker's slots taken")

        ping = requests.get(f"{server.url}/api/v1/ping", timeout=60)
        assert ping.status_code == 200, ping.text
        links = requests.get(f"{server.url}/api/v1/events/S230518h/reports", timeout=60)
        assert links.status_code == 200, links.text
        assert [report["site"] for report in links.json()["reports"]] == ["llo"]
        assert uploads_open(server) >= THREADS - 1  # the slow uploads still hold theirs
    finally:
        for patch in slow:
            patch.close()
    # Each one, streaming or waiting, keeps what it sent once its client is gone.
    for url in urls:
        wait_for(lambda url=url: offset_of(url) == SENT, what=f"the bytes sent to {url}")


def test_silent_connections_hold_no_thread_and_are_closed_after_the_header_timeout(
    server: LiveServer,
) -> None:
    silent = [
        socket.create_connection(("127.0.0.1", server.port), timeout=60)
        for _ in range(3 * WORKERS * THREADS)
    ]
    partial = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    try:
        partial.sendall(b"GET /api/v1/ping HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        held = len(silent) + 1
        wait_for(lambda: connections_held(server) >= held, what="all connected")
        assert requests.get(f"{server.url}/api/v1/ping", timeout=60).status_code == 200
        assert connections_held(server) >= held  # still open while the ping was answered
        # Closed by the server (header_timeout = 8 s), without an answer.
        for connection in [*silent, partial]:
            assert connection.recv(1024) == b""
    finally:
        for connection in [*silent, partial]:
            connection.close()


def test_sigterm_returns_at_once_beside_idle_keep_alive_connections(
    tmp_path: Path, data_dir: Path
) -> None:
    """Browsers keep connections open; a client may be sending a body.  The
    stop waits for neither: idle connections are closed, the body in flight
    ends with its bytes kept.  (A graceful_timeout of 600 s: a stop that
    waited for any of them would show.)"""
    gunicorn_config = tmp_path / "gunicorn.conf.py"
    gunicorn_config.write_text("graceful_timeout = 600\n")
    server = LiveServer(
        data_dir,
        config=write_config(tmp_path / "server.toml", read_timeout=600),
        extra_args=["--gunicorn-config", str(gunicorn_config)],
    ).start()
    connections: list[socket.socket] = []
    try:
        url = new_upload(server, LENGTH)
        upload = RawPatch(url, 0, LENGTH)
        upload.send(b"y" * SENT)
        wait_for(lambda: data_file(server, url).stat().st_size == SENT, what="the bytes stored")
        for _ in range(4):  # kept alive after an answer, then idle
            connection = socket.create_connection(("127.0.0.1", server.port), timeout=60)
            connection.sendall(b"GET /api/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n")
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")
            connections.append(connection)
        connections.append(socket.create_connection(("127.0.0.1", server.port), timeout=60))

        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
        status, _ = upload.response()
        assert status == 400  # the body ended early: resume from Upload-Offset
        upload.close()
    finally:
        for connection in connections:
            connection.close()
        server.discard()
    restarted = LiveServer(data_dir, config=server.config).start()
    try:
        assert offset_of(f"{restarted.url}/files/{upload_id(url)}") == SENT
    finally:
        restarted.discard()
