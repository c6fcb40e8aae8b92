"""Which processes of a server listen on its port (gunicorn workers each bind
their own socket with ``reuse_port``), read from ``/proc`` with psutil.

Used by the tests of the listening sockets and by the benchmarks, which
measure a server only once all its workers listen.
"""

from __future__ import annotations

import os

import psutil


def listening_sockets(process: psutil.Process, port: int) -> list[str]:
    """The sockets (``socket:[inode]``) on which ``process`` listens on ``port``;
    empty if it listens on none or is gone."""
    try:
        sockets = process.net_connections(kind="tcp")
        return [
            os.readlink(f"/proc/{process.pid}/fd/{s.fd}")
            for s in sockets
            if s.status == psutil.CONN_LISTEN and s.laddr.port == port
        ]
    except (psutil.Error, FileNotFoundError):
        return []


def listening_processes(pid: int, port: int) -> list[psutil.Process]:
    """The process ``pid`` and its descendants that listen on ``port``."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    return [process for process in tree if listening_sockets(process, port)]
