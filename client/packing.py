"""A directory as a deterministic tar archive, read on the fly, never stored.

Packing first lays the archive out: for every member, in sorted order, its tar
header (built once, a few hundred bytes) and where its content comes from.
The archive is then a list of *segments* (header bytes, a file's content,
padding) with known offsets, so any byte range can be produced straight from
the files, again and again, without a temporary copy and without holding
anything but one block in memory.  That is what makes a directory upload
resumable like a file: the same tree always gives the same bytes, so the same
sha256 and the same resume entry.

Normalisation (the archive depends only on names, contents and the
executable bit):

* members sorted by their path (bytewise on the UTF-8 name), directories
  before their contents;
* owner and group 0, no user or group names;
* mode 0755 for directories and executables, 0644 for other files;
* one timestamp for every member: ``$SOURCE_DATE_EPOCH`` if set, else the
  newest modification time in the tree (whole seconds), so published files
  carry a meaningful date;
* POSIX pax format (long and non-ASCII names), padded to whole 10 KiB records
  as ``tar`` does.

Symbolic links to files inside the directory are stored as the file they
point to.  A link whose target, resolved, lies outside the directory is
skipped with a warning naming it and its target, unless
``follow_external_links`` (``--follow-external-links``) is set: then it too
is stored as the file it points to.  Without that rule a link such as
``secret -> ~/.netrc`` in a report directory would publish the file.
Symbolic links to directories (inside or out), sockets, devices and FIFOs
are skipped with a warning, and so are names the report contract refuses
(names starting with ``.``, control characters): the server would refuse
the whole archive for them.

The content sent is the file that was checked: each member's stamp holds
its inode and device, and a member whose link is turned to another file
after packing fails :func:`~dqrxfer.regions.open_unchanged`.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import stat
import tarfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import contract
from .errors import PayloadChangedError, UsageError
from .regions import FileRegion, FileStamp, read_range

log = logging.getLogger("dqr-xfer")

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240


@dataclass(frozen=True)
class Member:
    """One archive member: its name, and its file on disk (None for a directory)."""

    name: str
    path: Path
    is_dir: bool
    size: int
    executable: bool
    stamp: FileStamp | None


@dataclass(frozen=True)
class Segment:
    """``length`` bytes at ``offset`` of the archive: literal ``data``, or the
    content of ``member`` (a file)."""

    offset: int
    length: int
    data: bytes = b""
    member: Member | None = None


def _skip(relpath: str, reason: str) -> None:
    log.warning("skipping %s: %s", relpath, reason)


def _name_problem(relpath: str) -> str | None:
    for component in relpath.split("/"):
        try:
            contract.validate_filename(component)
        except contract.ContractError as error:
            return error.rule
    return None


def link_target(path: Path) -> Path:
    """Where the symbolic link ``path`` ends up, every link on the way resolved
    (also when the target is missing, or a loop: then as far as it resolves)."""
    return Path(os.path.realpath(path))


def leaves(target: Path, directory: Path) -> bool:
    """Whether ``target`` (resolved) lies outside ``directory`` (resolved)."""
    return not target.is_relative_to(directory)


def collect_members(root: Path, follow_external_links: bool = False) -> list[Member]:
    """Walk ``root`` and return the members to archive, sorted.

    ``follow_external_links``: store links to files outside ``root`` as the
    files they point to, instead of skipping them.
    """
    members: list[Member] = []
    real_root = Path(os.path.realpath(root))

    def walk(directory: Path, prefix: str) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: os.fsencode(entry.name))
        except OSError as error:
            raise UsageError(f"{directory}: {error.strerror}") from None
        for entry in entries:
            relpath = f"{prefix}{entry.name}"
            problem = _name_problem(relpath)
            if problem is not None:
                _skip(relpath, problem)
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    members.append(Member(relpath, path, True, 0, True, None))
                    walk(path, relpath + "/")
                    continue
                if entry.is_symlink():
                    target = link_target(path)
                    if path.is_dir():
                        _skip(relpath, f"a symbolic link to a directory ({target})")
                        continue
                    if leaves(target, real_root) and not follow_external_links:
                        _skip(
                            relpath,
                            f"a symbolic link to {target}, outside {root} "
                            "(--follow-external-links sends what it points to)",
                        )
                        continue
                info = path.stat()  # follows a link to a file
            except FileNotFoundError:
                _skip(relpath, "a dangling symbolic link or vanished")
                continue
            except OSError as error:
                raise UsageError(f"{path}: {error.strerror}") from None
            if not stat.S_ISREG(info.st_mode):
                _skip(relpath, "not a regular file or directory")
                continue
            if not os.access(path, os.R_OK):
                raise UsageError(f"{path}: not readable")
            executable = bool(info.st_mode & 0o111)
            members.append(
                Member(relpath, path, False, info.st_size, executable, FileStamp.of(info))
            )

    walk(root, "")
    return members


def archive_mtime(members: list[Member]) -> int:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return int(epoch)
    return max(
        (m.stamp.mtime_ns // 1_000_000_000 for m in members if m.stamp is not None), default=0
    )


def tar_header(member: Member, mtime: int) -> bytes:
    info = tarfile.TarInfo(member.name + ("/" if member.is_dir else ""))
    info.type = tarfile.DIRTYPE if member.is_dir else tarfile.REGTYPE
    info.size = member.size
    info.mode = 0o755 if member.is_dir or member.executable else 0o644
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def layout(members: list[Member], mtime: int) -> list[Segment]:
    """The archive as segments; adjacent literal bytes are merged."""
    segments: list[Segment] = []
    pending = bytearray()
    offset = 0

    def flush() -> None:
        nonlocal pending, offset
        if pending:
            segments.append(Segment(offset, len(pending), bytes(pending)))
            offset += len(pending)
            pending = bytearray()

    for member in members:
        pending += tar_header(member, mtime)
        if member.size:
            flush()
            segments.append(Segment(offset, member.size, member=member))
            offset += member.size
            remainder = member.size % BLOCK
            if remainder:
                pending += bytes(BLOCK - remainder)
    pending += bytes(2 * BLOCK)
    total = offset + len(pending)
    if total % RECORD:
        pending += bytes(RECORD - total % RECORD)
    flush()
    return segments


@dataclass
class DirectoryPayload:
    """A directory packed into a tar on the fly (``kind=tar``)."""

    source: Path
    filename: str
    kind: str
    size: int
    members: list[Member]
    segments: list[Segment]
    _starts: list[int] = field(default_factory=list, repr=False)

    @classmethod
    def pack(cls, root: Path, follow_external_links: bool = False) -> DirectoryPayload:
        root = Path(root)
        members = collect_members(root, follow_external_links)
        if not any(not m.is_dir for m in members):
            raise UsageError(f"{root}: no files to upload in this directory")
        name = root.resolve().name or "report"
        return cls._of(root, f"{name}.tar", members)

    @classmethod
    def _of(cls, root: Path, filename: str, members: list[Member]) -> DirectoryPayload:
        segments = layout(members, archive_mtime(members))
        size = segments[-1].offset + segments[-1].length
        payload = cls(root, filename, contract.KIND_TAR, size, members, segments)
        payload._starts = [segment.offset for segment in segments]
        return payload

    def only(self, names: Collection[str]) -> DirectoryPayload:
        """The archive of the files named (member names) and the directories
        above them, nothing else: what is sent when the server has the rest."""
        keep = set(names)
        above = {
            name.rsplit("/", depth)[0] for name in keep for depth in range(1, name.count("/") + 1)
        }
        members = [m for m in self.members if m.name in (above if m.is_dir else keep)]
        return self._of(self.source, self.filename, members)

    @property
    def file_count(self) -> int:
        return sum(1 for m in self.members if not m.is_dir)

    @property
    def content_bytes(self) -> int:
        return sum(m.size for m in self.members)

    def blocks(self, start: int, end: int) -> Iterator[bytes]:
        for piece in self.regions(start, end):
            if isinstance(piece, FileRegion):
                yield from read_range(piece.path, piece.stamp, piece.start, piece.end)
            else:
                yield piece

    def regions(self, start: int, end: int) -> Iterator[bytes | FileRegion]:
        index = bisect.bisect_right(self._starts, start) - 1
        position = start
        while position < end and index < len(self.segments):
            segment = self.segments[index]
            lo = position - segment.offset
            hi = min(segment.length, end - segment.offset)
            if segment.member is None:
                yield segment.data[lo:hi]
            else:
                assert segment.member.stamp is not None
                yield FileRegion(segment.member.path, segment.member.stamp, lo, hi)
            position = segment.offset + hi
            index += 1

    def identity(self) -> str:
        """The layout (names, sizes, modes, headers) and each file's
        modification time: the archive's bytes follow from these."""
        digest = hashlib.sha256()
        for segment in self.segments:
            if segment.member is None:
                digest.update(segment.data)
            else:
                stamp = segment.member.stamp
                assert stamp is not None
                described = [segment.member.name, stamp.size, stamp.mtime_ns]
                digest.update(json.dumps(described).encode("utf-8", "surrogateescape"))
        return f"tar:{self.size}:{digest.hexdigest()}"

    def check_unchanged(self) -> None:
        for member in self.members:
            if member.stamp is None:
                continue
            try:
                stamp = FileStamp.of(member.path.stat())
            except OSError as error:
                raise PayloadChangedError(f"{member.path}: {error.strerror}") from None
            if stamp != member.stamp:
                raise PayloadChangedError(
                    f"{member.path}: changed since the directory was packed; run again"
                )
