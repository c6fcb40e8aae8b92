"""How ``dqrxfer-server serve`` listens: a socket per worker, so that the
kernel spreads connections over the workers, and an address already in use
refused before anything starts."""

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

CONNECTIONS = 24


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


def established(process: psutil.Process, port: int) -> int:
    return sum(
        1
        for s in process.net_connections(kind="tcp")
        if s.status == psutil.CONN_ESTABLISHED and s.laddr.port == port
    )


def test_each_worker_listens_on_a_socket_of_its_own(data_dir: Path) -> None:
    """Not one socket made by the master and shared by the workers (the
    worker awake first would accept every connection that arrives together),
    but one per worker, among which the kernel spreads connections."""
    server = LiveServer(data_dir, workers=3).start()
    try:
        wait_for_listening_workers(server, 3)
        assert server.process is not None
        assert not listening_sockets(psutil.Process(server.process.pid), server.port)
        sockets = [listening_sockets(worker, server.port) for worker in listening_workers(server)]
        assert all(len(own) == 1 for own in sockets), sockets
        assert len({own[0] for own in sockets}) == 3, sockets
    finally:
        server.discard()


def test_connections_arriving_together_are_spread_over_the_workers(data_dir: Path) -> None:
    """24 keep-alive connections opened at once: on one shared socket the
    worker awake first would take them all; with a socket per worker every
    worker gets some (all on one worker by chance: 2 in 2^24)."""
    server = LiveServer(data_dir, workers=2).start()
    connections: list[socket.socket] = []
    try:
        wait_for_listening_workers(server, 2)
        connections = [
            socket.create_connection(("127.0.0.1", server.port), timeout=10)
            for _ in range(CONNECTIONS)
        ]
        for connection in connections:
            connection.sendall(b"GET /api/v1/ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        for connection in connections:
            assert connection.recv(4096).startswith(b"HTTP/1.1 ")  # answered, kept open
        workers = listening_workers(server)
        counts = [established(worker, server.port) for worker in workers]
        assert sum(counts) == CONNECTIONS, counts
        assert len(counts) == 2 and min(counts) > 0, counts
    finally:
        for connection in connections:
            connection.close()
        server.discard()


def test_serve_refuses_an_address_another_server_listens_on(data_dir: Path) -> None:
    """A listener that set SO_REUSEPORT (as another ``serve`` does) could share
    the port with the new workers unnoticed; ``serve`` refuses instead."""
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


def test_port_zero_keeps_one_shared_socket() -> None:
    """``--port 0`` asks for any free port: with a socket per worker each
    worker would get a different one, so then the workers share one."""
    from dqrxfer.server.wsgi import gunicorn_options

    assert gunicorn_options("127.0.0.1", 0)["reuse_port"] is False
    assert gunicorn_options("127.0.0.1", 8080)["reuse_port"] is None  # the default: True


def test_the_log_names_the_url_the_workers_listen_on(data_dir: Path) -> None:
    """With a socket per worker gunicorn's arbiter has none to name: its
    ``Listening at:`` line names the URL instead of a blank."""
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
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert f"Listening at: http://[::1]:{port} ({process.pid})" in log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
