"""Durable SQLite commits without holding the database's write lock while
the disk flushes: a commit, then an ``fdatasync`` of the write-ahead log.

With ``synchronous=FULL`` SQLite fsyncs the log inside COMMIT, while it holds
the write lock: every other writer of every worker waits for that flush, so
commits that finish together are flushed one after the other.  Here the
durable transactions commit as the others do (``synchronous=NORMAL``: the
commit is written to the log, not flushed) and the committing thread then
flushes the log itself, after the lock is released.  Threads that commit
together flush together: the kernel writes the log's pages once and their
flushes end with one journal commit (a group commit), and the next writer
does not wait for the disk.

The commit is on disk when :meth:`WalSync.sync` returns: its frames are in
the log file flushed, or a checkpoint has copied them into the database file
since, and in WAL mode with ``synchronous=NORMAL`` SQLite syncs the database
file after every checkpoint (it also flushes the log before one).  The log is
the same file while connections are open (a checkpoint rewinds it in place);
SQLite deletes it when the last connection closes, after a checkpoint, and
makes a new one at the next: the open log is compared with the path by inode
and opened again (its directory flushed with it, for its name) when it
changed.
"""

from __future__ import annotations

import errno
import os
import threading
import weakref

#: Every instance, so that a forked child gets new locks (see ``_after_fork``).
_instances: weakref.WeakSet[WalSync] = weakref.WeakSet()


class WalSync:
    """Flushes the write-ahead log of the SQLite database at ``database_path``."""

    def __init__(self, database_path: str) -> None:
        self.log_path = database_path + "-wal"
        self._directory = os.path.dirname(os.path.abspath(database_path))
        #: (process id, descriptor, inode) of the log opened last; a forked
        #: worker opens its own
        self._open: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        _instances.add(self)

    def sync(self) -> None:
        """Flush the log (call after a commit, outside the transaction)."""
        pid = os.getpid()
        try:
            inode = os.stat(self.log_path).st_ino
        except FileNotFoundError:
            return  # checkpointed into the database file (synced) and removed
        opened = self._open
        if opened is None or opened[0] != pid or opened[2] != inode:
            opened = self._reopen(pid, inode)
            if opened is None:
                return
        try:
            os.fdatasync(opened[1])
        except OSError as error:
            # Closed by a thread that found a newer log: this one was removed,
            # so the commit was checkpointed into the database file (synced).
            if error.errno != errno.EBADF:
                raise

    def _reopen(self, pid: int, inode: int) -> tuple[int, int, int] | None:
        """The log opened anew, unless another thread just did so for the
        same file (``inode``, as :meth:`sync` found it): its descriptor must
        stay open, since that thread's commit may be in that file."""
        with self._lock:
            opened = self._open
            if opened is not None and opened[0] == pid and opened[2] == inode:
                return opened
            try:
                fd = os.open(self.log_path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            # The log's name is durable with it (SQLite flushes the directory
            # of a log it creates only when it syncs the log itself).
            directory = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            previous = self._open
            self._open = (pid, fd, os.fstat(fd).st_ino)
            if previous is not None and previous[0] == pid:
                os.close(previous[1])
            return self._open

    def close(self) -> None:
        with self._lock:
            opened, self._open = self._open, None
            if opened is not None and opened[0] == os.getpid():
                os.close(opened[1])


def _after_fork() -> None:
    # Another thread of the parent may have held a lock at the fork; the
    # child has no such thread, so that lock would never be released there.
    for instance in list(_instances):
        instance._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
