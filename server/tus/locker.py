"""One writer per upload: the :class:`Locker` interface and a file-lock locker.

A lock is held for the duration of one request that changes an upload (PATCH,
DELETE, a declared length, a concatenation, a finalization).  A second writer
waits up to ``timeout`` seconds and then gets **423 Locked** with a message
saying to retry; tus-js-client retries 423 by itself.  tusd instead asks the
holder to release its lock.  We wait because the holder is usually a request
whose client has gone away: its body read then fails within the server's
``read_timeout`` (or at once when the connection is reset), the bytes it
received are kept and the lock is released.  Interrupting a live writer
would throw away its bytes in flight, and a holder in another process or on
another host cannot be interrupted anyway.

Locks are released when the holding request ends, when its process dies
(the kernel drops ``flock`` locks; PostgreSQL drops advisory locks with the
session, see :mod:`.pglocker`), whatever the reason.
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
    #: Default wait for a busy lock, in seconds.
    timeout: float

    def lock(self, upload_id: str, timeout: float | None = None) -> AbstractContextManager[None]:
        """Hold the upload's lock inside the ``with`` block; raise the 423
        :class:`~.errors.TusError` after waiting ``timeout`` seconds (default
        :attr:`timeout`; 0 means try once)."""
        ...

    def discard(self, upload_id: str) -> None:
        """Forget a removed upload's lock (called with the lock held)."""
        ...


class FileLocker:
    """``flock`` on ``<directory>/<id>.lock``.

    Works across threads (each ``lock`` opens its own file description),
    processes and gunicorn workers on one host, and across hosts on
    filesystems that map ``flock`` onto byte-range locks (NFSv4 on Linux).
    The kernel drops the lock when the process dies.  For several hosts with
    PostgreSQL, :class:`~.pglocker.PostgresLocker` does not depend on the
    filesystem's lock support.
    """

    FIRST_POLL = 0.002
    MAX_POLL = 0.05

    def __init__(self, directory: str | os.PathLike[str], timeout: float = 10.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout

    @contextmanager
    def lock(self, upload_id: str, timeout: float | None = None) -> Iterator[None]:
        path = self.directory / f"{upload_id}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
            poll = self.FIRST_POLL
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise errors.locked() from None
                    # flock has no timed wait: poll, backing off to MAX_POLL.
                    time.sleep(min(poll, left))
                    poll = min(poll * 2, self.MAX_POLL)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def discard(self, upload_id: str) -> None:
        # A request still waiting on the old file gets the lock after us and
        # then finds the upload gone (404): ids are never reused.
        (self.directory / f"{upload_id}.lock").unlink(missing_ok=True)
