"""What a tus handler needs from storage: :class:`UploadInfo` and the
:class:`Store` protocol, with its optional capabilities.

As tusd separates ``handler/datastore.go`` from its ``filestore``, this module
is the contract and :mod:`.store` one implementation of it (files on a POSIX
filesystem).  The protocol layers (:mod:`.lifecycle`, :mod:`.blueprint`) and
the application's hooks use only what is declared here.

An optional capability is a protocol of its own that a store may implement,
checked with ``isinstance`` where it is used: :class:`HashingStore`, a store
that computes each upload's SHA-256 while its bytes arrive, so that whoever
needs the digest of a finished upload need not read it again.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

#: ``read(n)`` returns up to ``n`` bytes, ``b""`` at the end of the body, and
#: raises when the body cannot be read (client gone, timeout).
Reader = Callable[[int], bytes]

CONCAT_PARTIAL = "partial"
CONCAT_FINAL = "final"


@dataclass
class UploadInfo:
    """What the protocol knows about one upload.

    ``offset`` and ``modified`` are derived from the stored bytes, never stored.
    ``concat`` is ``"partial"``, ``"final"`` or ``None`` (concatenation
    extension); ``partials`` lists a final upload's partial uploads in order.
    ``completed`` is set once ``post_finish`` has run for a finished upload.
    ``size_limit`` is the largest length the upload may reach, if the
    application set one at creation (``pre_create``), below the endpoint's
    ``max_size``; ``size_limit_rule`` says who set it, for the refusals that
    name it.  The protocol enforces it on a deferred length, on every PATCH
    and on a final upload's concatenation.  ``reserved`` (not in the state
    file; see :meth:`Store.reserve`) is the length a PATCH in flight may take
    a deferred-length upload to, so that the cap on its owner's unfinished
    bytes counts it while the body streams.
    """

    id: str
    length: int | None
    offset: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    owner: str | None = None
    concat: str | None = None
    partials: list[str] = field(default_factory=list)
    completed: bool = False
    modified: float = 0.0
    size_limit: int | None = None
    size_limit_rule: str = ""
    reserved: int = 0

    @property
    def deferred_length(self) -> bool:
        return self.length is None

    @property
    def finished(self) -> bool:
        return self.length is not None and self.offset >= self.length

    @property
    def is_partial(self) -> bool:
        """A partial upload of the concatenation extension: only ever used to
        build a final upload (its metadata is the application's business)."""
        return self.concat == CONCAT_PARTIAL

    @property
    def is_final(self) -> bool:
        return self.concat == CONCAT_FINAL

    def to_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in _STATE_FIELDS}

    @classmethod
    def from_json(cls, state: dict[str, object], offset: int, modified: float) -> UploadInfo:
        derived = ("offset", "modified", "reserved")
        known = {name for name in cls.__dataclass_fields__ if name not in derived}
        values = {key: value for key, value in state.items() if key in known}
        # The values are as JSON gave them; this store wrote them.
        return cls(offset=offset, modified=modified, **values)  # type: ignore[arg-type]


#: What the state file holds: everything but what is derived from the data
#: file and ``completed``, which is the state file's name.
_STATE_FIELDS = tuple(
    name
    for name in UploadInfo.__dataclass_fields__
    if name not in ("offset", "modified", "completed", "reserved")
)


class Store(Protocol):
    """The storage a tus handler needs.

    Implementations must be safe to use from several processes at once, given
    that a :class:`~.locker.Locker` serialises the writers of one upload: every
    method that changes an upload is called with its lock held, except
    :meth:`create` (the upload is not visible before it returns).
    """

    def create(self, info: UploadInfo) -> UploadInfo:
        """Make the upload (a new id if ``info.id`` is empty), all or nothing."""
        ...

    def get(self, upload_id: str) -> UploadInfo:
        """The upload as stored now; :func:`~.errors.not_found` if unknown."""
        ...

    def write(
        self,
        upload_id: str,
        offset: int,
        read: Reader,
        limit: int,
        verify: Callable[[], None] | None = None,
    ) -> int:
        """Append what ``read`` yields at ``offset`` (at most ``limit`` bytes;
        with ``verify``, all or nothing); returns the bytes written."""
        ...

    def declare_length(self, info: UploadInfo, length: int) -> None:
        """Set a deferred length."""
        ...

    def mark_completed(self, info: UploadInfo) -> None:
        """Record that ``post_finish`` ran (``info.completed``)."""
        ...

    def make_durable(self, upload_id: str, with_state: bool = True) -> None:
        """Put a finished upload's data (and its state) on disk, as the
        store's durability policy says, before it is handed over."""
        ...

    def terminate(self, upload_id: str) -> None:
        """Remove the upload and everything kept for it."""
        ...

    def link_final(self, partial_id: str, final_id: str) -> None:
        """Remember that a final upload waits for an unfinished partial one."""
        ...

    def finals_waiting_for(self, partial_id: str) -> list[str]:
        """The final uploads :meth:`link_final` recorded for a partial one."""
        ...

    def concatenate(self, final: UploadInfo, partials: list[UploadInfo]) -> None:
        """Fill a final upload with its partials' bytes, atomically."""
        ...

    def upload_ids(self) -> Iterator[str]:
        """Every upload in the store (for housekeeping)."""
        ...

    def unfinished_upload_ids(self, owner: str | None) -> list[str]:
        """The owner's uploads whose ``post_finish`` has not run, without
        reading anyone else's (and perhaps some that are gone or completed
        since: :meth:`unfinished_upload` says).  An upload leaves the list
        before it completes or is removed, never after."""
        ...

    def unfinished_upload(self, owner: str | None, upload_id: str) -> UploadInfo | None:
        """One of :meth:`unfinished_upload_ids`, of deferred length with its
        ``reserved`` length (the only ones a reservation is made for); None
        if it is gone, completed, or not the owner's."""
        ...

    def reserve(self, info: UploadInfo, up_to: int) -> None:
        """Record that a request in flight may take the deferred-length
        upload ``info`` to ``up_to`` bytes (0: the request ended), visible to
        :meth:`unfinished_upload` in every process until changed."""
        ...

    def remove_stale_temporaries(self, older_than: float) -> int:
        """Remove what interrupted writes left, older than ``older_than``
        (POSIX time); returns how many."""
        ...

    def remove_leftovers(self, older_than: float) -> list[str]:
        """Remove remains of uploads no request can use (``get`` says 404),
        older than ``older_than``; returns their ids."""
        ...

    def data_path(self, upload_id: str) -> Path:
        """Where the upload's bytes are, for an application to publish them."""
        ...


@runtime_checkable
class HashingStore(Protocol):
    """Optional capability: a store that hashes uploads as their bytes arrive."""

    def known_sha256(self, upload_id: str) -> str | None:
        """The SHA-256 of the upload's data if this process saw all of it
        arrive; None otherwise (then read the data)."""
        ...

    def forget_sha256(self, upload_id: str) -> None:
        """Drop what is kept for the upload's SHA-256 (it is no longer needed)."""
        ...


def new_upload_id() -> str:
    return secrets.token_hex(16)


_HEX_DIGITS = frozenset("0123456789abcdef")


def valid_id(upload_id: str) -> bool:
    return 0 < len(upload_id) <= 64 and _HEX_DIGITS.issuperset(upload_id)
