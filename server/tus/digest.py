"""The SHA-256 of uploads computed while their bytes arrive, in this process.

An application that needs a finished upload's digest (the reports application
records and verifies every payload's SHA-256) would otherwise read the whole
file again after the last byte: 0.6 s per GiB of a core, while the client
waits for the last answer.  Instead the store hands every block it wrote to a
hashing thread (hashlib releases the GIL, so the hash runs beside the next
``recv`` and write) and keeps, per upload, the hash object and the offset it
has reached.

The state lives in memory only: it is used when the next PATCH of an upload
comes to the same process at exactly the offset the hash has reached (one
client's keep-alive connection stays with one gunicorn worker), and when the
digest is asked for with the data file exactly that long.  In every other case
(another worker or host, a restart, an eviction, a write that failed in a way
the hash did not follow) the entry is dropped or never matches, and the
application reads the file as before.  A file's bytes below an offset the hash
reached are never rewritten (the store only ever truncates an unverified
checksummed chunk, which started at or after that offset), so an entry whose
offset equals the file's size describes the file.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any

from .pools import ProcessLocalPool

#: Uploads whose running hash one process keeps (least recently used go first).
MAX_ENTRIES = 256
#: Threads hashing for all requests of a process.
HASH_THREADS = 4

#: The process's hashing threads (a forked worker starts its own).
_pool = ProcessLocalPool(HASH_THREADS, thread_name_prefix="dqrxfer-sha256")


class RunningDigests:
    """Per upload: the SHA-256 of its first ``offset`` bytes, as far as known."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def start(self, upload_id: str, offset: int) -> Any | None:
        """The hash to continue for a write at ``offset`` (taken out of the
        table until :meth:`keep` puts it back), or None if unknown."""
        with self._lock:
            entry = self._entries.pop(upload_id, None)
        if entry is not None and entry[0] == offset:
            return entry[1]
        return hashlib.sha256() if offset == 0 else None

    def keep(self, upload_id: str, offset: int, digest: Any) -> None:
        with self._lock:
            self._entries[upload_id] = (offset, digest)
            self._entries.move_to_end(upload_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def hexdigest(self, upload_id: str, size: int) -> str | None:
        """The SHA-256 of an upload whose data file is ``size`` bytes long,
        if the running hash covers exactly those bytes."""
        with self._lock:
            entry = self._entries.get(upload_id)
        if entry is None or entry[0] != size:
            return None
        return str(entry[1].hexdigest())

    def forget(self, upload_id: str) -> None:
        with self._lock:
            self._entries.pop(upload_id, None)


class Feeder:
    """Feeds one write's blocks to a hash on a hashing thread, one block in
    flight at a time (so the order is kept).

    The body reader reuses its buffer for the next read, so each block is
    copied, into one of two buffers the feeder keeps for the whole write:
    while the hashing thread reads one, the next block goes to the other.  A
    fresh ``bytes`` per block would cost more than the copy (a megabyte
    allocated, page-faulted and freed again for every block).
    """

    def __init__(self, digest: Any) -> None:
        self.digest = digest
        self._pending: Future[None] | None = None
        self._buffers = [bytearray(), bytearray()]
        self._next = 0

    def feed(self, block: bytes | memoryview) -> None:
        # The buffer used two blocks ago: its hash ended before the previous
        # block was submitted (``wait`` below), so it is free.
        index, self._next = self._next, self._next ^ 1
        size = len(block)
        if len(self._buffers[index]) < size:
            self._buffers[index] = bytearray(size)
        view = memoryview(self._buffers[index])[:size]
        view[:] = block
        self.wait()
        self._pending = _pool.get().submit(self.digest.update, view)

    def wait(self) -> None:
        """Block until every block fed so far is hashed."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()
