"""Thread pools made on first use, one per process.

A gunicorn worker is a fork of the master, and threads do not survive
``fork``: a pool the master (or a test, or a preloading application) had made
has no threads in the child, and work submitted to it there would wait
forever.  :class:`ProcessLocalPool` therefore makes a new pool when the
process asking is not the one that made it.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

#: Guards the making of every pool (rare: once per pool and process).
_lock = threading.Lock()


def _new_lock_in_child() -> None:
    # Another thread of the parent may have held the lock at the fork; the
    # child has no such thread, so that lock would never be released there.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


class ProcessLocalPool:
    """A :class:`ThreadPoolExecutor` of ``max_workers`` threads named
    ``thread_name_prefix``, made by the first :meth:`get` of each process."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        self.max_workers = max_workers
        self.thread_name_prefix = thread_name_prefix
        # The pool and the process that made it, in one attribute so that a
        # thread reads the two together.
        self._made: tuple[int, ThreadPoolExecutor] | None = None

    def get(self) -> ThreadPoolExecutor:
        """This process's pool: the same one on every call in one process, a
        new one in a child forked after the parent made its own."""
        pid = os.getpid()
        made = self._made
        if made is None or made[0] != pid:
            with _lock:
                made = self._made
                if made is None or made[0] != pid:
                    executor = ThreadPoolExecutor(
                        self.max_workers, thread_name_prefix=self.thread_name_prefix
                    )
                    made = self._made = (pid, executor)
        return made[1]
