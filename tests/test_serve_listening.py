"""How ``dqrxfer-server serve`` listens: one socket shared by the workers
(each accepts while it has a thread free, server/worker.py), and an address
already in use refused before anything starts."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import psutil

from support.listening import listening_among, listening_sockets
from support.live import LiveServer, free_port, tool


def listening_workers(server: LiveServer) -> list[psutil.Process]:
    """The server's worker processes that listen on its port."""
    assert server.process is not None
    children = psutil.Process(server.process.pid).children(recursive=True)
    return listening_among(children, server.port)


def wait_for_listening_workers(server: LiveServer, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(listening_workers(server)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} workers listen:\n{server.log()}"
        time.sleep(0.05)


def test_the_workers_share_one_listening_socket(data_dir: Path) -> None:
    """One socket, made by the master: a worker whose threads are busy stops
    accepting and an idle one takes the next connection (with a socket per
    worker the kernel would pick the worker by a hash, busy or not)."""
    server = LiveServer(data_dir, workers=3).start()
    try:
        wait_for_listening_workers(server, 3)
        assert server.process is not None
        master = listening_sockets(psutil.Process(server.process.pid), server.port)
        assert len(master) == 1, master
        sockets = [listening_sockets(worker, server.port) for worker in listening_workers(server)]
        assert sockets == [master] * 3, sockets
    finally:
        server.discard()


def test_serve_refuses_an_address_another_server_listens_on(data_dir: Path) -> None:
    """A listener that set SO_REUSEPORT (as a server configured with
    ``reuse_port`` does) could share the port with workers that set it too,
    unnoticed; ``serve`` refuses before it starts anything."""
    port = free_port()
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        command = [tool("dqrxfer-server"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        result = subprocess.run(
            [*command, "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "another server" in result.stderr
    assert "Booting worker" not in result.stderr  # refused before gunicorn started
