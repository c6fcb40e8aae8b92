"""One writer per upload: the :class:`Locker` interface and a file-lock locker.

A lock is held for the duration of one request that changes an upload (PATCH,
DELETE, a declared length, a concatenation, a finalization).  A request for
the upload that finds the lock held may ask the holder to let go
(``take_over``), as tusd's lock release requests do: a holder reading a
request body whose client has gone silent (a link gone dark: no FIN, no RST,
just nothing) stops reading, keeps the bytes it stored and releases the lock
(see :mod:`.body`), so that the client, reconnected, resumes at once instead
of after the server's ``read_timeout``.  A holder whose body still arrives is
not interrupted (that would throw away its bytes in flight), nor is one that
is finishing an upload: a second writer waits up to ``timeout`` seconds and
then gets **423 Locked** with a message saying to retry; tus-js-client
retries 423 by itself.

The request to let go has to reach a holder in another process or on another
host, so it is itself a lock that the holder looks for: here a read lock on
the upload's byte of a second file (``uploads.release``); with PostgreSQL a
shared advisory lock on a second key (:mod:`.pglocker`).  It lasts while the
asking request waits and vanishes with it, whatever the reason, so no request
is ever left behind.

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
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Protocol

from . import errors


class Hold(Protocol):
    """A held lock, as its holder sees it."""

    def release_requested(self) -> bool:
        """Whether another request waits for the lock and asked to take it
        over.  One system call or one database round trip: holders ask
        only now and then (a silent body, every half second)."""
        ...


class Locker(Protocol):
    #: Default wait for a busy lock, in seconds.
    timeout: float

    def lock(
        self, upload_id: str, timeout: float | None = None, take_over: bool = False
    ) -> AbstractContextManager[Hold]:
        """Hold the upload's lock inside the ``with`` block; raise the 423
        :class:`~.errors.TusError` after waiting ``timeout`` seconds (default
        :attr:`timeout`; 0 means try once).  With ``take_over``, a wait asks
        the holder to let go (:meth:`Hold.release_requested`)."""
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
    for each other (or take over each other's silent holder, which keeps its
    bytes), never interleave.  The kernel drops the lock when the
    file is closed or the process dies.

    A waiter taking over (``take_over``) read-locks the same byte of a second
    shared file, ``uploads.release``, while it waits; the holder asks the
    kernel whether anyone does (``F_OFD_GETLK``, see :class:`_FileHold`).

    No file per upload: creating a file costs a directory entry and an inode
    on every upload, and nothing would ever remove them.  For several hosts
    with PostgreSQL, :class:`~.pglocker.PostgresLocker` does not depend on the
    filesystem's lock support.
    """

    FIRST_POLL = 0.002
    MAX_POLL = 0.05
    FILENAME = "uploads.lock"
    #: Read locks on the upload's byte of this file ask its holder to let go.
    RELEASE_FILENAME = "uploads.release"

    def __init__(self, directory: str | os.PathLike[str], timeout: float = 10.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = str(self.directory / self.FILENAME)
        self.release_path = str(self.directory / self.RELEASE_FILENAME)
        for path in (self.path, self.release_path):
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self.timeout = timeout

    @staticmethod
    def byte_of(upload_id: str) -> int:
        """The lock byte of an upload: a non-negative 63-bit file offset."""
        digest = hashlib.blake2b(upload_id.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") >> 1

    @contextmanager
    def lock(
        self, upload_id: str, timeout: float | None = None, take_over: bool = False
    ) -> Iterator[Hold]:
        byte = self.byte_of(upload_id)
        request = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            wait = self.timeout if timeout is None else timeout
            if not _try_lock(fd, request):
                with self._asking(byte) if take_over and wait > 0 else nullcontext():
                    self._wait(fd, request, wait)
            hold = _FileHold(self.release_path, byte)
            try:
                yield hold
            finally:
                hold.close()
        finally:
            os.close(fd)  # releases the lock

    def _wait(self, fd: int, request: bytes, wait: float) -> None:
        deadline = time.monotonic() + wait
        poll = self.FIRST_POLL
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.locked()
            # No timed wait for these locks: poll, backing off to MAX_POLL.
            time.sleep(min(poll, left))
            poll = min(poll * 2, self.MAX_POLL)
            if _try_lock(fd, request):
                return

    @contextmanager
    def _asking(self, byte: int) -> Iterator[None]:
        """Ask the holder of ``byte`` to let go while the ``with`` block
        waits: a read lock (several waiters may ask at once) on its own open
        file description, dropped when closed."""
        fd = os.open(self.release_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Nobody takes a write lock on this file: a read lock is granted.
            _try_lock(fd, struct.pack(_FLOCK, fcntl.F_RDLCK, os.SEEK_SET, byte, 1, 0))
            yield
        finally:
            os.close(fd)

    def discard(self, upload_id: str) -> None:
        """Nothing to remove: locks live in the shared file."""


def _try_lock(fd: int, request: bytes) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
    except (BlockingIOError, PermissionError):
        return False
    return True


class _FileHold:
    """A :class:`Hold` of :class:`FileLocker`: a request to let go is a lock
    on the upload's byte of the release file (``F_OFD_GETLK`` sees it)."""

    def __init__(self, release_path: str, byte: int) -> None:
        self.release_path = release_path
        self.query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0)
        self.fd: int | None = None

    def release_requested(self) -> bool:
        if self.fd is None:
            self.fd = os.open(self.release_path, os.O_RDWR | os.O_CREAT, 0o600)
        found = fcntl.fcntl(self.fd, fcntl.F_OFD_GETLK, self.query)
        return bool(struct.unpack(_FLOCK, found)[0] != fcntl.F_UNLCK)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


#: ``struct flock`` (short l_type, short l_whence, off_t l_start, off_t l_len,
#: pid_t l_pid, padding) as the Linux kernel reads it on 64-bit platforms.
_FLOCK = "@hhqqi4x"
