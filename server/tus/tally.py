"""The bytes an owner's unfinished uploads hold (the cap
``max_unfinished_bytes``), without reading the state of each of them at every
creation.

What an upload counts (:func:`counted`) is a function of its state, the
owner's hint of it (the reservation of a deferred length) and the time.  For
most uploads it cannot change until the upload stops counting altogether:

* the length of an upload whose length is known never changes;
* a final upload counts nothing, ever;
* an upload stops counting when it completes or is removed, and the store
  removes its owner's hint *before* either (``FileStore.mark_completed``,
  ``FileStore.terminate``), so while its hint is listed it has not;
* it stops counting when it expires, by time alone, no sooner than its
  expiry time as read once: every write moves the time of its last change
  later, never earlier.

So :class:`UnfinishedTally` keeps, per process, what each listed upload
counts and until when that holds (:func:`holds_until`), and at each count
lists the owner's hints (one directory read) and reads only the uploads it
does not know, those whose time has come, and those whose count may change
meanwhile (deferred lengths, whose received bytes and reservations change
with every PATCH; expired uploads, which a PATCH begun before their expiry
may still touch).  Nothing is stored beside the uploads: another process or
host, a crash at any point, or a restart leaves nothing that could be wrong;
what a process knows is checked against the hints the store lists at every
count.

**Invariant** (``tests/test_tus_tally_stateful.py``): :meth:`UnfinishedTally.total`
equals :meth:`UnfinishedTally.recount`, which reads the state of every listed
upload, at the same moment and with the same files.  The clock going back by
more than :data:`CLOCK_SLACK` empties what a process knows (its expiry times
were read on the clock before); by less, an upload may count up to that long
past an expiry that a write during the jump moved earlier.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from .datastore import Store, UploadInfo
from .expiration import expires_at, is_expired

#: Owners whose counts a process keeps at most; beyond, it starts over
#: (a count of an owner it forgot reads that owner's uploads once again).
MAX_OWNERS = 4096
#: Seconds the clock may seem to go back between two counts (threads take
#: the time in one order and count in another) before what a process knows
#: is dropped: expiry times are read on the clock that wrote the files.
CLOCK_SLACK = 1.0


def counted(info: UploadInfo, expiry: float, now: float) -> int:
    """What ``info`` counts against its owner's cap at ``now``: its length,
    or, while its length is deferred, its received bytes or the length a
    PATCH in flight may take it to (its ``reserved``).  Final uploads count
    nothing (their bytes are their partial uploads'), nor do expired uploads
    (they take no more bytes; ``cleanup`` removes them) and completed ones."""
    if info.completed or info.is_final or is_expired(info, expiry, now):
        return 0
    return max(info.offset, info.reserved) if info.length is None else info.length


def holds_until(info: UploadInfo, expiry: float, now: float) -> float:
    """Until when :func:`counted` stays what it is at ``now`` for as long as
    the upload's owner's hint is listed (see the module's docstring); a
    moment not after ``now`` where any request may change it."""
    if info.is_final:
        return math.inf
    if info.completed or info.length is None or is_expired(info, expiry, now):
        return -math.inf
    moment = expires_at(info, expiry)
    return math.inf if moment is None else moment


@dataclass(frozen=True)
class _Count:
    bytes: int
    until: float


class UnfinishedTally:
    """What each owner's unfinished uploads count, kept per process; see the
    module's docstring.  Safe for several threads: each count builds a new
    table of the owner's uploads and puts it in place whole, and every entry
    of any table stays true while its upload's hint is listed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._owners: dict[str | None, dict[str, _Count]] = {}
        #: the latest moment counted at: a moment before it means the clock went back
        self._latest = -math.inf
        self._lock = threading.Lock()

    def total(
        self, owner: str | None, expiry: float, now: float, excluding: str | None = None
    ) -> int:
        """The bytes ``owner``'s unfinished uploads (but ``excluding``) count
        at ``now`` (uploads expire ``expiry`` seconds after their last
        change; 0: never)."""
        with self._lock:
            if now < self._latest - CLOCK_SLACK:
                self._owners.clear()  # the clock went back: expiries read on another
            self._latest = max(self._latest, now)
            known = self._owners.get(owner, {})
        table: dict[str, _Count] = {}
        total = 0
        for upload_id in self.store.unfinished_upload_ids(owner):
            count = known.get(upload_id)
            if count is None or count.until <= now:
                info = self.store.unfinished_upload(owner, upload_id)
                if info is None:
                    continue
                count = _Count(counted(info, expiry, now), holds_until(info, expiry, now))
            if count.until > now:
                table[upload_id] = count
            if upload_id != excluding:
                total += count.bytes
        with self._lock:
            if len(self._owners) >= MAX_OWNERS and owner not in self._owners:
                self._owners.clear()
            self._owners[owner] = table
        return total

    def recount(
        self, owner: str | None, expiry: float, now: float, excluding: str | None = None
    ) -> int:
        """The same as :meth:`total`, reading the state of every upload of
        the owner in progress: what :meth:`total` must equal."""
        total = 0
        for upload_id in self.store.unfinished_upload_ids(owner):
            info = self.store.unfinished_upload(owner, upload_id)
            if info is not None and upload_id != excluding:
                total += counted(info, expiry, now)
        return total

    def forget(self) -> None:
        """Drop what this process knows (the next counts read every upload)."""
        with self._lock:
            self._owners.clear()
