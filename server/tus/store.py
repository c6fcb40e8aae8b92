"""Where uploads live: the :class:`Store` interface and a POSIX file store.

The store keeps, for each upload, a data file (``<id>``) and a state file
(``<id>.info``, JSON, replaced atomically).  The offset of an upload is never
stored: it is the size of its data file.  After a crash, the offset a HEAD
reports therefore never counts bytes that are not on disk, and bytes that
reached the disk before a dropped connection count (a resume re-sends only
what never arrived).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from . import errors

#: Size of the blocks a request body is copied to disk in.  Bounded memory per
#: request, whatever the chunk size a client chooses.
BLOCK_SIZE = 1024 * 1024

Reader = Callable[[int], bytes]


@dataclass
class UploadInfo:
    """What the protocol knows about one upload."""

    id: str
    length: int | None
    offset: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    expires: float | None = None
    owner: str | None = None
    concat: str | None = None
    partials: list[str] = field(default_factory=list)

    @property
    def deferred_length(self) -> bool:
        return self.length is None

    @property
    def finished(self) -> bool:
        return self.length is not None and self.offset >= self.length

    def to_json(self) -> dict[str, object]:
        state = asdict(self)
        state.pop("offset")
        return state

    @classmethod
    def from_json(cls, state: dict[str, object], offset: int) -> UploadInfo:
        known = {name for name in cls.__dataclass_fields__ if name != "offset"}
        values = {key: value for key, value in state.items() if key in known}
        return cls(offset=offset, **values)  # type: ignore[arg-type]


class Store(Protocol):
    """The storage a tus handler needs.  Implementations must be safe to use
    from several processes at once, given that a :class:`~.locker.Locker`
    serialises writers of one upload."""

    def create(self, info: UploadInfo) -> UploadInfo: ...

    def get(self, upload_id: str) -> UploadInfo: ...

    def write_chunk(self, upload_id: str, offset: int, read: Reader, limit: int) -> int: ...

    def data_path(self, upload_id: str) -> Path: ...


def new_upload_id() -> str:
    return secrets.token_hex(16)


def _valid_id(upload_id: str) -> bool:
    return 0 < len(upload_id) <= 64 and all(c in "0123456789abcdef" for c in upload_id)


def write_json_atomically(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file, fsync and rename."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """Uploads as files in one directory (local or a shared POSIX filesystem).

    ``fsync``: when true (the default), data is fsynced at the end of every
    write, so an acknowledged offset survives a power loss.
    """

    def __init__(self, directory: str | os.PathLike[str], fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync

    def data_path(self, upload_id: str) -> Path:
        if not _valid_id(upload_id):
            raise errors.not_found()
        return self.directory / upload_id

    def _info_path(self, upload_id: str) -> Path:
        return self.data_path(upload_id).with_suffix(".info")

    def create(self, info: UploadInfo) -> UploadInfo:
        """Create the data file first, then the state file that makes it visible."""
        if not info.id:
            info.id = new_upload_id()
        data = self.data_path(info.id)
        with open(data, "xb") as handle:
            if self.fsync:
                os.fsync(handle.fileno())
        write_json_atomically(self._info_path(info.id), info.to_json())
        info.offset = 0
        return info

    def get(self, upload_id: str) -> UploadInfo:
        try:
            with open(self._info_path(upload_id), encoding="utf-8") as handle:
                state = json.load(handle)
            offset = self.data_path(upload_id).stat().st_size
        except FileNotFoundError:
            raise errors.not_found() from None
        return UploadInfo.from_json(state, offset)

    def write_chunk(self, upload_id: str, offset: int, read: Reader, limit: int) -> int:
        """Append what ``read`` yields at ``offset``, at most ``limit`` bytes.

        Bytes are written as they arrive, in blocks of :data:`BLOCK_SIZE`; if
        ``read`` raises (the client went away), what was written stays and the
        exception propagates.  Returns the number of bytes written.
        """
        written = 0
        with open(self.data_path(upload_id), "r+b", buffering=0) as handle:
            handle.seek(offset)
            try:
                while written < limit:
                    block = read(min(BLOCK_SIZE, limit - written))
                    if not block:
                        break
                    handle.write(block)
                    written += len(block)
            finally:
                if self.fsync:
                    os.fsync(handle.fileno())
        return written

    def truncate(self, upload_id: str, offset: int) -> None:
        """Cut the data file back to ``offset`` (used to discard a refused chunk)."""
        os.truncate(self.data_path(upload_id), offset)
