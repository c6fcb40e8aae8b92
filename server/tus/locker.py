"""One writer per upload: the :class:`Locker` interface and a file-lock locker.

A lock is held for the duration of one request that changes an upload.  A
second writer waits up to ``timeout`` seconds and then gets 423 Locked with a
message saying to retry.  (tusd instead asks the holder to release the lock;
we chose waiting because the holder is usually a dead connection whose read
times out, and interrupting a live writer would lose its bytes in flight.)
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from . import errors


class Locker(Protocol):
    def lock(self, upload_id: str) -> AbstractContextManager[None]: ...


class FileLocker:
    """``flock`` on ``<directory>/<id>.lock``.

    Works across threads, processes and gunicorn workers on one host, and
    across hosts on filesystems that map ``flock`` onto byte-range locks
    (NFSv4 on Linux).  The kernel drops the lock if the process dies.
    """

    POLL_INTERVAL = 0.02

    def __init__(self, directory: str | os.PathLike[str], timeout: float = 10.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout

    @contextmanager
    def lock(self, upload_id: str) -> Iterator[None]:
        path = self.directory / f"{upload_id}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise errors.locked() from None
                    time.sleep(self.POLL_INTERVAL)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
