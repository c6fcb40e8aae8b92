"""How ``dqrxfer-server serve`` listens: one socket shared by the workers
(each accepts while it has a thread free, server/worker.py), and an address
already in use refused before anything starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests

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


def test_the_log_names_the_url_the_workers_listen_on(data_dir: Path) -> None:
    """gunicorn's ``Listening at:`` line names the URL (with a socket per
    worker, which a configuration file may ask for, it showed a blank)."""
    server = LiveServer(data_dir, workers=1).start()
    try:
        assert server.process is not None
        line = f"Listening at: http://127.0.0.1:{server.port} ({server.process.pid})"
        assert line in server.log(), server.log()
        assert "Listening at:  " not in server.log()
    finally:
        server.discard()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_serve_listens_on_an_ipv6_address(data_dir: Path) -> None:
    """``--host ::1`` is bound as gunicorn reads IPv6 (``[::1]:port``), and
    the log names ``http://[::1]:port``."""
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    command = [tool("dqrxfer-server"), "serve", "--host", "::1", "--port", str(port)]
    log = data_dir.parent / "serve-ipv6.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [*command, "--workers", "1", "--data-dir", str(data_dir)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if requests.get(f"http://[::1]:{port}/api/v1/ping", timeout=1).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert f"Listening at: http://[::1]:{port} ({process.pid})" in log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
