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
(the kernel drops file locks with their file; PostgreSQL drops advisory locks
with the session, see :mod:`.pglocker`), whatever the reason.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
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
    """Byte-range locks on one shared lock file, one byte per upload.

    ``<directory>/uploads.lock`` is locked with open file description locks
    (``F_OFD_SETLK``, Linux): each :meth:`lock` opens the file anew, so the
    lock excludes other threads of the same process as well as other
    processes and gunicorn workers; over NFS (v4, or v3 with NLM) byte-range
    locks are the filesystem's own, so several hosts sharing the uploads
    directory exclude each other too.  The byte is at an offset derived from
    the upload id (64-bit hash): two uploads sharing a byte would only wait
    for each other, never interleave.  The kernel drops the lock when the
    file is closed or the process dies.

    No file per upload: creating a file costs a directory entry and an inode
    on every upload, and nothing would ever remove them.  For several hosts
    with PostgreSQL, :class:`~.pglocker.PostgresLocker` does not depend on the
    filesystem's lock support.
    """

    FIRST_POLL = 0.002
    MAX_POLL = 0.05
    FILENAME = "uploads.lock"

    def __init__(self, directory: str | os.PathLike[str], timeout: float = 10.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = str(self.directory / self.FILENAME)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self.timeout = timeout

    @staticmethod
    def byte_of(upload_id: str) -> int:
        """The lock byte of an upload: a non-negative 63-bit file offset."""
        digest = hashlib.blake2b(upload_id.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") >> 1

    @contextmanager
    def lock(self, upload_id: str, timeout: float | None = None) -> Iterator[None]:
        request = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, self.byte_of(upload_id), 1, 0)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
            poll = self.FIRST_POLL
            while True:
                try:
                    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
                    break
                except (BlockingIOError, PermissionError):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise errors.locked() from None
                    # No timed wait for these locks: poll, backing off to MAX_POLL.
                    time.sleep(min(poll, left))
                    poll = min(poll * 2, self.MAX_POLL)
            yield
        finally:
            os.close(fd)  # releases the lock

    def discard(self, upload_id: str) -> None:
        """Nothing to remove: locks live in the shared file."""


#: ``struct flock`` (short l_type, short l_whence, off_t l_start, off_t l_len,
#: pid_t l_pid, padding) as the Linux kernel reads it on 64-bit platforms.
_FLOCK = "@hhqqi4x"
