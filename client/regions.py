"""Byte ranges of files on disk, read only while the file is unchanged.

A :class:`FileStamp` identifies one state of a file; :func:`read_range` and
:class:`FileRegion` read a range of a file in bounded blocks and refuse a
file that is no longer the one stamped.  Both kinds of payload use them: a
file sent as it is (:mod:`dqrxfer.payload`) and a directory packed on the fly
(:mod:`dqrxfer.packing`); a connection sends a region with ``sendfile``
(:mod:`dqrxfer.sendfile`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import PayloadChangedError

#: Size of each read from disk (and of each piece handed to the socket).
BLOCK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class FileStamp:
    """What identifies one state of a file cheaply: if any of these change,
    its bytes may have changed."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileStamp:
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)


def open_unchanged(path: Path, stamp: FileStamp) -> io.FileIO:
    """``path`` opened for reading (unbuffered), if it is still ``stamp``."""
    handle = open(path, "rb", buffering=0)  # noqa: SIM115 - returned to the caller
    if FileStamp.of(os.fstat(handle.fileno())) != stamp:
        handle.close()
        raise PayloadChangedError(f"{path}: changed since the upload started; run again")
    return handle


def shrank(path: Path) -> PayloadChangedError:
    return PayloadChangedError(f"{path}: shrank while being sent; run again")


def read_range(path: Path, stamp: FileStamp, start: int, end: int) -> Iterator[bytes]:
    """Yield bytes ``[start, end)`` of ``path``, checking it is still ``stamp``."""
    with open_unchanged(path, stamp) as handle:
        position = start
        while position < end:
            block = os.pread(handle.fileno(), min(BLOCK_SIZE, end - position), position)
            if not block:
                raise shrank(path)
            position += len(block)
            yield block


@dataclass(frozen=True)
class FileRegion:
    """Bytes ``[start, end)`` of the file ``path`` (which must still be ``stamp``).

    A connection that knows regions sends them with ``sendfile``; to anything
    else a region is an iterable of byte blocks (which ``http.client`` sends
    one by one).
    """

    path: Path
    stamp: FileStamp
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start

    def __iter__(self) -> Iterator[bytes]:
        return read_range(self.path, self.stamp, self.start, self.end)

    def open(self) -> io.FileIO:
        """The file, opened for reading, if it is unchanged."""
        return open_unchanged(self.path, self.stamp)

    def split(self, size: int) -> Iterator[FileRegion]:
        """This region in consecutive pieces of at most ``size`` bytes."""
        for start in range(self.start, self.end, size):
            yield FileRegion(self.path, self.stamp, start, min(self.end, start + size))
