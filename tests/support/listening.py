"""Which processes of a server listen on its port (gunicorn workers each bind
their own socket with ``reuse_port``), read from ``/proc`` with psutil.

Used by the tests of the listening sockets and by the benchmarks, which
measure a server only once all its workers listen.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

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


def listening_among(processes: Iterable[psutil.Process], port: int) -> list[psutil.Process]:
    """Those of ``processes`` that listen on ``port``."""
    return [process for process in processes if listening_sockets(process, port)]
