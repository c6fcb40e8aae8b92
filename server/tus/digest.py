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
digest is asked for with the data file exactly that long.  A PATCH that finds
no hash at its offset (it came on a new connection, after a reset, to another
worker; or after a restart) catches up: a hashing thread reads the data file's
bytes below the offset from the page cache while the request's own blocks
wait in memory (:data:`MAX_BACKLOG` at most, then the request waits), so the
digest is complete when the last byte arrives, rather than read again after
it (a second per GiB, and a reset is ordinary on a long link).  In every other
case (another host, an eviction, a write that failed in a way the hash did not
follow) the entry is dropped or never matches, and the application reads the
file as before.  A file's bytes below an offset the hash
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

from .body import StableBuffer
from .pools import ProcessLocalPool

#: Uploads whose running hash one process keeps (least recently used go first).
MAX_ENTRIES = 256
#: Threads hashing for all requests of a process.
HASH_THREADS = 4
#: Bytes of a request kept in memory while its hash catches up with the data
#: file (at 20 MB/s, three seconds: a GiB is read and hashed in less).
MAX_BACKLOG = 64 * 1024 * 1024
#: Read size while catching up.
CATCH_UP_READ = 4 * 1024 * 1024
#: A write's first bytes, up to this many, are hashed on the request's own
#: thread: for a small body (a 64 KiB report, hashed in about 45 us) handing
#: each block to a hashing thread and waiting for it (a queue, a wake-up, a
#: future) cost more CPU than the hash.  Beyond it, blocks go to the hashing
#: threads, beside the next ``recv`` and write.
INLINE_BYTES = 128 * 1024

#: The process's hashing threads (a forked worker starts its own).
_pool = ProcessLocalPool(HASH_THREADS, thread_name_prefix="dqrxfer-sha256")


class RunningDigests:
    """Per upload: the SHA-256 of its first ``offset`` bytes, as far as known.

    A write's last block may still be being hashed when its request is
    answered (only the digest of a finished upload is waited for, and that
    wait overlaps the fsync of its data): an entry then holds the pending
    hash, and every reader of the entry (:meth:`start`, :meth:`hexdigest`)
    waits for it first, so no digest or copy is ever taken of a hash that
    has not yet taken all the bytes the entry's offset counts.
    """

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[str, tuple[int, Any, Future[Any] | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def start(self, upload_id: str, offset: int) -> Any | None:
        """The hash to continue for a write at ``offset`` (taken out of the
        table until :meth:`keep` puts it back), or None if unknown."""
        with self._lock:
            entry = self._entries.pop(upload_id, None)
        if entry is not None and entry[0] == offset and _settled(entry[2]):
            return entry[1]
        return hashlib.sha256() if offset == 0 else None

    def keep(
        self, upload_id: str, offset: int, digest: Any, pending: Future[Any] | None = None
    ) -> None:
        """``digest`` is the hash of the first ``offset`` bytes once
        ``pending`` (its last update, if still running) has ended."""
        with self._lock:
            self._entries[upload_id] = (offset, digest, pending)
            self._entries.move_to_end(upload_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def hexdigest(self, upload_id: str, size: int) -> str | None:
        """The SHA-256 of an upload whose data file is ``size`` bytes long,
        if the running hash covers exactly those bytes."""
        with self._lock:
            entry = self._entries.get(upload_id)
        if entry is None or entry[0] != size or not _settled(entry[2]):
            return None
        return str(entry[1].hexdigest())

    def forget(self, upload_id: str) -> None:
        with self._lock:
            self._entries.pop(upload_id, None)


def _settled(pending: Future[Any] | None) -> bool:
    """Wait for a hash's last update; False if it failed (the hash is then
    unknown: a catch-up that found the data file short)."""
    if pending is None:
        return True
    try:
        pending.result()
    except Exception:
        return False
    return True


def hash_file_prefix(digest: Any, path: str, length: int) -> Any:
    """Feed the first ``length`` bytes of the file at ``path`` to ``digest``;
    returns a copy of it then."""
    with open(path, "rb", buffering=0) as handle:
        done = 0
        while done < length:
            block = handle.read(min(CATCH_UP_READ, length - done))
            if not block:
                raise OSError(f"{path} ended after {done} of {length} bytes")
            digest.update(block)
            done += len(block)
    return digest.copy()


class Feeder:
    """Feeds one write's blocks to a hash on a hashing thread, one block in
    flight at a time (so the order is kept); the write's first
    :data:`INLINE_BYTES` are hashed at once, on the caller's thread.

    A block is hashed where it lies if nothing can change it before its hash
    ends: ``bytes``, and blocks of the socket body reader's
    :class:`~.body.StableBuffer` (unchanged until the second read after,
    and the next block is fed, so this one's hash waited for, before that
    read).  Any other block may be overwritten by the next read, so it is
    copied, into one of two buffers the feeder keeps for the whole write:
    while the hashing thread reads one, the next block goes to the other.  A
    fresh ``bytes`` per block would cost more than the copy (a megabyte
    allocated, page-faulted and freed again for every block).

    ``catch_up`` (the data file's path and the offset of the write): the hash
    is new and first takes the file's bytes below the offset; the write's
    blocks meanwhile wait in a backlog (copies, up to :data:`MAX_BACKLOG`).
    """

    def __init__(self, digest: Any, catch_up: tuple[str, int] | None = None) -> None:
        self.digest = digest
        self._pending: Future[Any] | None = None
        self._buffers = [bytearray(), bytearray()]
        self._next = 0
        self._backlog: list[bytes] = []
        self._backlog_size = 0
        self._catching_up = catch_up is not None
        #: bytes this write may still hash inline (none while catching up)
        self._inline_left = 0 if catch_up is not None else INLINE_BYTES
        self._caught_up: Future[Any] | None = None
        if catch_up is not None:
            path, length = catch_up
            self._caught_up = _pool.get().submit(hash_file_prefix, digest, path, length)
            self._pending = self._caught_up

    def at_start(self) -> Any | None:
        """The hash as it was at the write's offset, if it caught up from the
        file (None otherwise); after :meth:`wait`."""
        return self._caught_up.result() if self._caught_up is not None else None

    def feed(self, block: bytes | memoryview) -> None:
        if self._catching_up:
            pending = self._pending
            behind = pending is not None and not pending.done()
            if behind and self._backlog_size + len(block) <= MAX_BACKLOG:
                self._backlog.append(bytes(block))
                self._backlog_size += len(block)
                return
            self._catching_up = False  # caught up, or the backlog is full: wait
        self._feed_one(block)

    def _feed_one(self, block: bytes | memoryview) -> None:
        if len(block) <= self._inline_left:
            # Nothing is pending here: every block before this one was
            # hashed inline too (the allowance only shrinks).
            self._inline_left -= len(block)
            self.digest.update(block)
            return
        self._inline_left = 0
        owner = block.obj if isinstance(block, memoryview) else None
        if type(block) is bytes or isinstance(owner, StableBuffer):
            self.wait()
            self._pending = _pool.get().submit(self.digest.update, block)
            if isinstance(owner, StableBuffer):
                owner.hashing = self._pending  # not recycled before it ends
            return
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

    def unsettled(self) -> Future[Any] | None:
        """After the last block: what may still be hashing it (for
        :meth:`RunningDigests.keep`), or None once every block is hashed.  A
        write that caught up from the file is waited for here."""
        if self._caught_up is not None:
            self.wait()
            return None
        pending, self._pending = self._pending, None
        return pending

    def wait(self) -> None:
        """Block until every block fed so far is hashed (backlog included)."""
        if self._backlog:
            backlog, self._backlog, self._backlog_size = self._backlog, [], 0
            self._wait_pending()
            self._pending = _pool.get().submit(_update_all, self.digest, backlog)
        self._wait_pending()

    def _wait_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()


def _update_all(digest: Any, blocks: list[bytes]) -> None:
    for block in blocks:
        digest.update(block)
