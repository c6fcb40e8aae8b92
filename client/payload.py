"""What is sent: a byte sequence of known size that can be read from any offset.

A payload is a file sent as it is (``kind=file``), an existing tarball
(``kind=tar``, recognised by its content, not its name) or a directory packed
on the fly into a deterministic tar (see :mod:`dqrxfer.packing`).  Payloads
are read in bounded blocks straight from disk, never held in memory, and a
range can be read any number of times (a retried request re-reads it).
A range can also be described as :class:`~dqrxfer.regions.FileRegion`
pieces (a file's path and byte range), which a connection sends with
``sendfile``, without reading the bytes into Python at all (see
:mod:`dqrxfer.sendfile`).

:func:`scan` reads a payload once to compute the whole-payload sha256 (the
report contract puts it in the metadata) and, when the server checks chunks,
the checksum of every chunk of the chunk grid.  :class:`BackgroundScan` runs
it on a thread of its own while the payload is being sent.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from . import contract
from .crc32 import Crc32, crc32_combine
from .errors import PayloadChangedError, UsageError
from .packing import DirectoryPayload
from .regions import (
    FileRegion,
    FileStamp,
    open_unchanged,
    read_range,
    shrank,
)

MiB = 1024 * 1024
#: Bytes of one PATCH request unless told otherwise; also the grid of the
#: per-chunk checksums that :func:`scan` computes.
DEFAULT_CHUNK_SIZE = 8 * MiB
#: How large a PATCH may grow while the link holds, when the chunk size is
#: not pinned (``dqr-upload`` without ``--chunk-size``): a whole number of
#: chunks, so the chunk checksums of the grid still apply (combined).
DEFAULT_MAX_PIECE = 64 * MiB
#: Size of the one buffer :func:`scan` reads a file into, again and again.
#: Large, so that the hashing thread needs the GIL seldom (twice per block)
#: while another thread runs Python code, and allocates nothing per block.
SCAN_BLOCK = 4 * MiB


class Payload(Protocol):
    """A sequence of ``size`` bytes that can be read from any offset."""

    source: Path
    filename: str
    kind: str
    size: int

    def blocks(self, start: int, end: int) -> Iterator[bytes]:
        """Yield the bytes ``[start, end)`` in blocks of at most
        :data:`~dqrxfer.regions.BLOCK_SIZE`."""
        ...

    def regions(self, start: int, end: int) -> Iterator[bytes | FileRegion]:
        """Yield the bytes ``[start, end)`` as file regions and literal bytes, in order."""
        ...

    def identity(self) -> str:
        """What identifies these bytes without reading them (names, sizes,
        modification times): it changes whenever the bytes may have."""
        ...

    def check_unchanged(self) -> None:
        """Raise :class:`PayloadChangedError` if the source changed since planning."""
        ...


@dataclass
class FilePayload:
    """One file, sent byte for byte."""

    source: Path
    filename: str
    kind: str
    size: int
    stamp: FileStamp

    @classmethod
    def open(cls, path: Path, kind: str) -> FilePayload:
        try:
            stat = path.stat()
        except OSError as error:
            raise UsageError(f"{path}: {error.strerror}") from None
        return cls(path, path.name, kind, stat.st_size, FileStamp.of(stat))

    def blocks(self, start: int, end: int) -> Iterator[bytes]:
        return read_range(self.source, self.stamp, start, end)

    def regions(self, start: int, end: int) -> Iterator[bytes | FileRegion]:
        if start < end:
            yield FileRegion(self.source, self.stamp, start, end)

    def identity(self) -> str:
        # Not the inode or device: a batch job may resume on another host
        # that mounts the same shared file system.
        return f"file:{self.size}:{self.stamp.mtime_ns}"

    def check_unchanged(self) -> None:
        try:
            stamp = FileStamp.of(self.source.stat())
        except OSError as error:
            raise PayloadChangedError(f"{self.source}: {error.strerror}") from None
        if stamp != self.stamp:
            raise PayloadChangedError(f"{self.source}: changed since the upload started; run again")


def is_tarball(path: Path) -> bool:
    """True if ``path`` holds a tar archive (plain, gzip, bzip2 or xz), judged by
    its content: a ``.gz`` that is not a tar inside is a plain file."""
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, tarfile.TarError):
        return False


def check_named_link(path: Path) -> None:
    """Refuse a command-line ``path`` that is a symbolic link leading out of
    the directory that holds it.

    A shell glob such as ``report/*`` names every entry of a report directory,
    a link ``report/netrc -> ~/.netrc`` among them: sent, it would publish the
    file it points to.  A path named on purpose can be named by its target
    instead (or the link kept, with ``--follow-external-links``).
    """
    if not path.is_symlink():
        return
    holder = Path(os.path.realpath(Path(os.path.abspath(path)).parent))
    target = Path(os.path.realpath(path))
    if not target.is_relative_to(holder):
        raise UsageError(
            f"{path}: a symbolic link to {target}, outside {path.parent}; name {target} "
            "itself, or pass --follow-external-links to send what it points to"
        )


def payload_for(path: Path, as_file: bool = False, follow_external_links: bool = False) -> Payload:
    """The payload for one command-line path.

    A directory becomes a packed tar, an existing tarball is sent as
    ``kind=tar`` (unless ``as_file``), any other file as ``kind=file``.
    Symbolic links leading out of the directory that holds them (``path``
    itself, or links inside a directory) are refused or skipped unless
    ``follow_external_links`` (see :mod:`dqrxfer.packing`).
    """
    if not follow_external_links:
        check_named_link(path)
    if path.is_dir():
        return DirectoryPayload.pack(path, follow_external_links)
    if not path.is_file():
        if not path.exists():
            raise UsageError(f"{path}: no such file or directory")
        raise UsageError(f"{path}: not a regular file or a directory")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{path}: not readable")
    kind = contract.KIND_TAR if not as_file and is_tarball(path) else contract.KIND_FILE
    return FilePayload.open(path, kind)


# -- checksums ---------------------------------------------------------------

#: Per-chunk checksum algorithms we can compute, fastest first.  A chunk
#: checksum guards one request against damage in transit (the server refuses
#: the chunk and it is sent again); the payload's integrity is proven by its
#: SHA-256, checked by the server before publishing.  So the cheapest
#: algorithm a server offers will do: CRC-32 (as zlib computes it, its value's
#: big-endian bytes in the header), then sha1, which every tus server with
#: the checksum extension must offer.
CHECKSUM_PREFERENCE = ("crc32", "sha1", "sha256", "md5")


class Hasher(Protocol):
    """What :func:`new_hasher` returns: hashlib's interface, as far as used."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


def new_hasher(algorithm: str) -> Hasher:
    return Crc32() if algorithm == "crc32" else hashlib.new(algorithm)


class GridDigests:
    """Digests of consecutive ``size``-byte blocks of a stream fed in pieces
    of any length: each block's digest goes to ``emit`` as soon as it is
    complete, and the last, shorter one at :meth:`finish`."""

    def __init__(self, algorithm: str, size: int, emit: Callable[[bytes], None]) -> None:
        self.algorithm = algorithm
        self.size = size
        self.emit = emit
        self._hasher = new_hasher(algorithm)
        self._filled = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.size - self._filled)
            self._hasher.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.size:
                self.emit(self._hasher.digest())
                self._hasher = new_hasher(self.algorithm)
                self._filled = 0

    def finish(self) -> None:
        if self._filled:
            self.emit(self._hasher.digest())
            self._filled = 0


def choose_checksum(offered: tuple[str, ...]) -> str | None:
    """Pick our preferred algorithm among those a server offers."""
    lowered = {name.lower() for name in offered}
    return next((name for name in CHECKSUM_PREFERENCE if name in lowered), None)


def tus_checksum(algorithm: str, digest: bytes) -> str:
    """The ``Upload-Checksum`` header value: algorithm and base64 digest."""
    return f"{algorithm} {base64.b64encode(digest).decode('ascii')}"


def checksum_range(payload: Payload, algorithm: str, start: int, end: int) -> bytes:
    digest = new_hasher(algorithm)
    for block in payload.blocks(start, end):
        digest.update(block)
    return digest.digest()


@dataclass
class Scan:
    """What one pass over a payload found."""

    sha256: str
    size: int
    chunk_size: int
    algorithm: str | None = None
    chunk_digests: list[bytes] = field(default_factory=list)
    #: While a background pass fills this in: notified at each new chunk
    #: digest and when the pass ends (then None).
    filling: threading.Condition | None = field(default=None, repr=False, compare=False)

    def grid_digest(self, start: int, end: int) -> bytes | None:
        """The digest of ``[start, end)`` if it is exactly one chunk of the grid.

        While a background pass is under way, a digest it will reach within
        :data:`LOOKAHEAD` chunks is waited for (computing it here too would
        read and digest the chunk twice); one further ahead is not (None).
        """
        if not self.algorithm or start % self.chunk_size:
            return None
        index = start // self.chunk_size
        if end != min(start + self.chunk_size, self.size):
            return None
        filling = self.filling
        if filling is not None and index >= len(self.chunk_digests):
            with filling:
                if index - len(self.chunk_digests) < LOOKAHEAD:
                    filling.wait_for(
                        lambda: index < len(self.chunk_digests) or self.filling is None
                    )
        # A list's append and indexing are atomic: safe beside the filling thread.
        return self.chunk_digests[index] if index < len(self.chunk_digests) else None

    def span_digest(self, start: int, end: int) -> tuple[int, bytes] | None:
        """The digest of the whole chunks of the grid from ``start`` towards ``end``.

        ``(stop, digest)`` for ``[start, stop)``, ``stop <= end``: the first
        chunk as :meth:`grid_digest` gives it (None if it gives none, and if
        ``end`` falls inside the first chunk), then, for CRC-32, as many
        following chunks as are known and end by ``end``, their digests
        combined (other algorithms do not combine: one chunk).
        """
        first_end = min(start + self.chunk_size, self.size)
        if end < first_end:
            return None
        digest = self.grid_digest(start, first_end)
        if digest is None:
            return None
        stop = first_end
        if self.algorithm != "crc32":
            return stop, digest
        value = int.from_bytes(digest, "big")
        while stop < end:
            index = stop // self.chunk_size
            following = min(stop + self.chunk_size, self.size)
            if following > end or index >= len(self.chunk_digests):
                break  # not hashed yet: the piece ends here rather than wait
            value = crc32_combine(
                value, int.from_bytes(self.chunk_digests[index], "big"), following - stop
            )
            stop = following
        return stop, value.to_bytes(4, "big")

    def add_digest(self, digest: bytes) -> None:
        self.chunk_digests.append(digest)
        filling = self.filling
        if filling is not None:
            with filling:
                filling.notify_all()

    def done_filling(self) -> None:
        filling, self.filling = self.filling, None
        if filling is not None:
            with filling:
                filling.notify_all()


#: How many chunks ahead of a background pass a sender waits for a chunk digest.
LOOKAHEAD = 4


def scan(
    payload: Payload,
    chunk_size: int,
    algorithm: str | None = None,
    on_block: Callable[[int], None] | None = None,
    into: Scan | None = None,
    stop: threading.Event | None = None,
) -> Scan:
    """Read the payload once: whole sha256, and per-chunk digests if asked.

    ``into`` is filled as the pass goes (each chunk digest as soon as it is
    known, the sha256 at the end), so another thread may use the chunk
    digests already there; ``stop`` ends the pass early (:class:`ScanStopped`).
    """
    whole = hashlib.sha256()
    result = into if into is not None else Scan("", payload.size, chunk_size, algorithm)
    chunks = GridDigests(algorithm, chunk_size, result.add_digest) if algorithm else None
    for block in _scan_blocks(payload):
        if stop is not None and stop.is_set():
            raise ScanStopped(f"{payload.filename}: hashing stopped")
        whole.update(block)
        if chunks is not None and result.algorithm is None:
            chunks = None  # the chunk digests are not wanted after all (see BackgroundScan)
        if chunks is not None:
            chunks.update(block)
        if on_block is not None:
            on_block(len(block))
    if chunks is not None:
        chunks.finish()
    result.sha256 = whole.hexdigest()
    return result


def _scan_blocks(payload: Payload) -> Iterator[bytes | memoryview]:
    """The payload from start to end, for :func:`scan`: a file read into one
    reused buffer (each view is valid until the next one), anything else in
    the payload's own blocks."""
    if not isinstance(payload, FilePayload):
        yield from payload.blocks(0, payload.size)
        return
    buffer = bytearray(min(SCAN_BLOCK, max(1, payload.size)))
    view = memoryview(buffer)
    with open_unchanged(payload.source, payload.stamp) as handle:
        done = 0
        while done < payload.size:
            count = handle.readinto(view[: min(len(buffer), payload.size - done)])
            if not count:
                raise shrank(payload.source)
            done += count
            yield view[:count]


class ScanStopped(Exception):
    """A background scan was told to stop."""


class BackgroundScan:
    """:func:`scan` on a thread of its own, while the payload is being sent.

    It reads the payload separately (from the page cache, mostly: the sender
    reads the same bytes at about the same time); hashlib and zlib release
    the GIL while they digest a block, so the two threads run on two cores.
    :attr:`scan` fills in as it goes (chunk digests first, the sha256 last);
    :meth:`result` waits for the end and raises what the pass raised;
    :attr:`hashed` counts the bytes hashed so far (for a progress bar).

    A pass may start before it is known whether the server takes chunk
    checksums, and with which algorithm: setting ``scan.algorithm`` to None
    while it runs ends the chunk digests (senders then send none).
    """

    def __init__(self, payload: Payload, chunk_size: int, algorithm: str | None) -> None:
        self.payload = payload
        self.scan = Scan("", payload.size, chunk_size, algorithm, filling=threading.Condition())
        self.hashed = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dqr-hash", daemon=True)

    def start(self) -> BackgroundScan:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            scan(
                self.payload,
                self.scan.chunk_size,
                self.scan.algorithm,
                on_block=self._count,
                into=self.scan,
                stop=self._stop,
            )
        except BaseException as error:  # handed to result()
            self._error = error
        finally:
            self.scan.done_filling()

    def _count(self, size: int) -> None:
        self.hashed += size

    def wait(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the end of the pass; True if it ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self) -> Scan:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.scan

    def stop(self) -> None:
        """End the pass (if it still runs) and wait for the thread."""
        self._stop.set()
        self._thread.join()
