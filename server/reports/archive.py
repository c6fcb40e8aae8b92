"""Safe extraction of an uploaded tar archive into a private staging directory.

The archive (plain, gzip, bzip2 or xz: recognised by its content, never by
its name) is read in two passes.  The first reads the headers only and checks
every member; the whole archive is refused, naming the first offending
member, before anything is written, when one:

* has an absolute name, a ``..`` component, a component starting with ``.``,
  a backslash, a control character, or a name too long or too deep;
* is a hard link, a device node, a FIFO, a sparse file or of an unknown type;
* is a symbolic link whose target is absolute, leaves the extraction root,
  or passes through another symbolic link (checked once the whole archive is
  known, against the archive and the existing report: see :func:`check_links`);
* conflicts with an earlier member (a file where a directory is needed);
* takes the archive over its limits: member count, total bytes of files,
  expansion ratio of the decompressed stream over the payload, or a single
  extended (pax / GNU long name) header larger than :data:`MAX_HEADER_BYTES`.

Each member also passes :func:`tarfile.data_filter` in the first pass (it
repeats the path checks and sanitises modes and ownership); the second pass
has :mod:`tarfile` extract the filtered members, in order, into the staging
directory (``extract(filter=...)`` with the already-filtered member, so the
filter's ``realpath`` calls run once per member, not twice).  Symbolic links are *not* created here:
they are returned to the caller and created only after :func:`check_links`
passed, so while files are written the staging directory contains no link
that a later member could be written through.  This makes the extraction safe
independently of the filter, including on Python releases whose filter can
be bypassed (CVE-2025-4517 and relatives: 3.11 before 3.11.13).

Each file's SHA-256 is computed while it is written, so publishing a report
records every file's digest without reading the files back.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import lzma
import os
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dqrxfer import contract

from ..config import TarLimits

if TYPE_CHECKING:
    from _typeshed import StrOrBytesPath

#: Largest pax extended header or GNU long name/link block accepted: tarfile
#: reads those into memory whole, so a hostile archive could otherwise make a
#: few compressed bytes claim gigabytes of RAM.
MAX_HEADER_BYTES = 1024 * 1024
#: Limits on names inside an archive (the report tree must stay usable and servable).
MAX_NAME_CHARS = 4096
MAX_NAME_DEPTH = 64
MAX_COMPONENT_BYTES = contract.MAX_FILENAME_BYTES
#: The expansion ratio is only enforced once the decompressed stream is this big
#: (a tiny archive of small text files legitimately compresses very well).
RATIO_FLOOR_BYTES = 1024 * 1024
#: Block size of each file's reads and writes.
COPY_BLOCK = 1024 * 1024

FILE, DIRECTORY, LINK = "file", "directory", "symbolic link"

if not hasattr(tarfile, "data_filter"):  # pragma: no cover - only on Python < 3.11.4
    raise ImportError("dqrxfer's server needs Python 3.11.4 or newer (tarfile extraction filters)")


class ArchiveRefused(Exception):
    """The archive breaks a rule; nothing of it may be published.

    ``member`` names the first offending member (``None`` when the problem is
    the archive as a whole) and ``rule`` says what was expected.
    """

    def __init__(self, member: str | None, rule: str) -> None:
        self.member = member
        self.rule = rule
        where = "archive" if member is None else f"archive member {_shown(member)}"
        super().__init__(f"{where}: {rule}")


def _shown(name: str, limit: int = 120) -> str:
    text = name if len(name) <= limit else name[: limit - 3] + "..."
    return repr(text)


@dataclass(frozen=True)
class StagedFile:
    size: int
    sha256: str


@dataclass
class StagedArchive:
    """What an archive put into the staging directory, by path relative to it."""

    root: Path
    files: dict[str, StagedFile] = field(default_factory=dict)
    directories: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)
    members: int = 0

    def kind_of(self, path: str) -> str | None:
        if path in self.files:
            return FILE
        if path in self.links:
            return LINK
        if path in self.directories:
            return DIRECTORY
        return None

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files.values())


def normalise_member_name(name: str) -> str:
    """The member's path relative to the extraction root ('' for the root itself).

    ``./a/b``, ``a//b`` and ``a/b/`` all become ``a/b`` (tar writes such
    names routinely); anything that could leave the root or hide in the
    served tree is refused rather than rewritten.
    """
    if name.startswith("/"):
        raise ArchiveRefused(name, "absolute member names are not allowed")
    if len(name) > MAX_NAME_CHARS:
        raise ArchiveRefused(name, f"member names are limited to {MAX_NAME_CHARS} characters")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if len(parts) > MAX_NAME_DEPTH:
        raise ArchiveRefused(name, f"member names are limited to {MAX_NAME_DEPTH} levels")
    for part in parts:
        broken = contract.broken_name_rule(part)  # the contract's rules for every name
        if broken is not None:
            raise ArchiveRefused(name, _MEMBER_NAME_RULES[broken])
    return "/".join(parts)


#: How a refused member name is explained ('' and '.' components were dropped).
_MEMBER_NAME_RULES = {
    contract.NAME_SPECIAL: "'..' is not allowed in member names",
    contract.NAME_HIDDEN: "names may not start with '.' (hidden files are refused)",
    contract.NAME_SEPARATOR: "names may not contain '\\', NUL or control characters",
    contract.NAME_CONTROL: "names may not contain '\\', NUL or control characters",
    contract.NAME_TOO_LONG: f"name components are limited to {MAX_COMPONENT_BYTES} bytes",
}


def _member_kind(info: tarfile.TarInfo) -> str:
    if info.type == tarfile.GNUTYPE_SPARSE or info.sparse is not None:
        raise ArchiveRefused(info.name, "sparse files are not allowed")
    if info.isreg():
        return FILE
    if info.isdir():
        return DIRECTORY
    if info.issym():
        return LINK
    if info.islnk():
        raise ArchiveRefused(info.name, "hard links are not allowed")
    if info.ischr() or info.isblk():
        raise ArchiveRefused(info.name, "device nodes are not allowed")
    if info.isfifo():
        raise ArchiveRefused(info.name, "FIFOs are not allowed")
    raise ArchiveRefused(info.name, f"member type {info.type!r} is not allowed")


class _GuardedTarInfo(tarfile.TarInfo):
    """Refuses oversized extended headers before tarfile reads them into memory.

    It hooks two private methods of tarfile's (stable since Python 3.0), which
    typeshed does not list: hence the two ``misc`` ignores."""

    def _proc_gnulong(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        self._guard()
        info: tarfile.TarInfo = super()._proc_gnulong(archive)  # type: ignore[misc]
        return info

    def _proc_pax(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        self._guard()
        info: tarfile.TarInfo = super()._proc_pax(archive)  # type: ignore[misc]
        return info

    def _guard(self) -> None:
        if self.size > MAX_HEADER_BYTES:
            raise ArchiveRefused(
                None,
                f"an extended header at offset {self.offset} claims {self.size} bytes "
                f"(limit {MAX_HEADER_BYTES})",
            )


class _HashingTarFile(tarfile.TarFile):
    """tarfile's own extraction, writing each file in large blocks and hashing
    it as it goes (in this thread: for files of a typical report, ~100 KiB,
    handing blocks to another thread costs more in GIL hand-offs than it saves)."""

    last_digest: str = ""

    def makefile(self, tarinfo: tarfile.TarInfo, targetpath: StrOrBytesPath) -> None:
        source = self.fileobj
        assert source is not None  # an archive being extracted is open
        source.seek(tarinfo.offset_data)
        digest = hashlib.sha256()
        remaining = tarinfo.size
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(targetpath, flags, 0o600)
        with open(fd, "wb", buffering=0, closefd=True) as target:
            while remaining:
                block = source.read(min(COPY_BLOCK, remaining))
                if not block:
                    raise tarfile.ReadError("unexpected end of data")
                digest.update(block)
                target.write(block)
                remaining -= len(block)
        self.last_digest = digest.hexdigest()

    def chown(
        self, tarinfo: tarfile.TarInfo, targetpath: StrOrBytesPath, numeric_owner: bool
    ) -> None:
        """Owners are never taken from an archive: files belong to the server."""


def _publishable(info: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    """The ``data`` filter, then the tree's own modes: files 0644 (0755 when
    executable), directories created with the default mode and fixed later."""
    filtered = tarfile.data_filter(info, path)
    if filtered is info:
        filtered = copy.copy(info)
    if filtered.isreg():
        filtered.mode = 0o755 if (filtered.mode or 0) & 0o100 else 0o644
    return filtered


def _check_parents(staged: StagedArchive, name: str) -> None:
    parts = name.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        kind = staged.kind_of(parent)
        if kind is None:
            staged.directories.add(parent)
        elif kind != DIRECTORY:
            raise ArchiveRefused(name, f"its parent {_shown(parent)} is a {kind} in this archive")


def _register(staged: StagedArchive, name: str, kind: str) -> None:
    _check_parents(staged, name)
    existing = staged.kind_of(name)
    if existing is not None and existing != kind:
        raise ArchiveRefused(name, f"appears twice, as a {existing} and as a {kind}")


def _plan_member(
    info: tarfile.TarInfo,
    staged: StagedArchive,
    limits: TarLimits,
    compressed_size: int,
    totals: list[int],
) -> tuple[str, str] | None:
    """Check one member's header; return (normalised name, kind), or None to skip it."""
    staged.members += 1
    if staged.members > limits.max_members:
        raise ArchiveRefused(
            info.name,
            f"the archive has more than {limits.max_members} members (limit tar_max_members)",
        )
    kind = _member_kind(info)
    name = normalise_member_name(info.name)
    if kind == FILE:
        totals[0] += info.size
        if totals[0] > limits.max_bytes:
            raise ArchiveRefused(
                info.name,
                f"the files add up to more than {limits.max_bytes} bytes (limit tar_max_bytes)",
            )
    expanded = info.offset_data + info.size
    if expanded > RATIO_FLOOR_BYTES and expanded > limits.max_ratio * max(compressed_size, 1):
        raise ArchiveRefused(
            info.name,
            f"the archive expands more than {limits.max_ratio} times (limit tar_max_ratio)",
        )
    if name == "":
        if kind != DIRECTORY:
            raise ArchiveRefused(info.name, "only a directory may name the root")
        return None
    _register(staged, name, kind)
    if kind == LINK:
        if not info.linkname or "\x00" in info.linkname:
            raise ArchiveRefused(info.name, "symbolic links need a target")
        check_links({name: info.linkname}, lambda _path: None)
        staged.links[name] = info.linkname
    elif kind == DIRECTORY:
        staged.directories.add(name)
    else:
        staged.files[name] = StagedFile(info.size, "")
    return name, kind


def extract_archive(
    payload: Path,
    staging: Path,
    limits: TarLimits,
    compressed_size: int | None = None,
) -> StagedArchive:
    """Extract ``payload`` into the empty directory ``staging``; raise :class:`ArchiveRefused`.

    Two passes over one open archive: the first reads every header and checks
    every member (nothing is written unless all pass: a 100,000-member archive
    or a compression bomb costs a read of its headers, not a flood of files);
    the second extracts the members in order.  On a refusal during the second
    pass (a corrupt stream) ``staging`` may hold part of the archive: the
    caller discards it.  Nothing is ever written outside ``staging``.
    """
    compressed_size = compressed_size if compressed_size is not None else payload.stat().st_size
    staged = StagedArchive(root=staging)
    root = str(staging)
    current: str | None = None
    try:
        with (
            open(payload, "rb") as raw,
            _HashingTarFile.open(fileobj=raw, mode="r:*", tarinfo=_GuardedTarInfo) as archive,
        ):
            archive.errorlevel = 2
            plan: list[tuple[tarfile.TarInfo, str]] = []
            totals = [0]
            for info in archive:
                current = info.name
                planned = _plan_member(info, staged, limits, compressed_size, totals)
                if planned is None:
                    continue
                name, kind = planned
                info.name = name  # the archive's own list of members is not used again
                try:
                    filtered = _publishable(info, root)
                except tarfile.FilterError as error:
                    raise ArchiveRefused(current, f"refused by the data filter: {error}") from None
                if kind != LINK:
                    plan.append((filtered, kind))
            if not staged.files and not staged.links:
                raise ArchiveRefused(None, "the archive contains no files")
            for filtered, kind in plan:
                current = filtered.name
                if kind == DIRECTORY:
                    archive.extract(filtered, root, set_attrs=False, filter="fully_trusted")
                else:
                    archive.extract(filtered, root, filter="fully_trusted")
                    staged.files[filtered.name] = StagedFile(filtered.size, archive.last_digest)
    except ArchiveRefused:
        raise
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, ValueError) as error:
        raise ArchiveRefused(
            None, f"not a readable tar archive (plain, gzip, bzip2 or xz): {error}"
        ) from None
    except OSError as error:
        if error.errno is None:  # gzip and bzip2 report corrupt data as a bare OSError
            raise ArchiveRefused(None, f"not a readable tar archive: {error}") from None
        if error.errno in _MEMBER_ERRNOS:
            raise ArchiveRefused(current, f"cannot be extracted: {error.strerror}") from None
        raise
    return staged


#: Errors that a member's own shape causes (anything else is the server's problem).
_MEMBER_ERRNOS = {errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG}


def check_links(
    links: dict[str, str],
    kind_of: Callable[[str], str | None],
) -> None:
    """Refuse any link that points outside the extraction root or through a link.

    ``links`` maps each link's path to its target; ``kind_of(path)`` tells what
    will be at ``path`` (relative to the extraction root) once published: the
    archive's own members first, then the existing report.  A link may not
    point *at* or *through* another link: chains are the way long-symlink
    attacks hide where a path really goes.
    """
    for path, target in sorted(links.items()):
        if target.startswith("/"):
            raise ArchiveRefused(path, f"symbolic link to an absolute path ({_shown(target)})")
        if len(target) > MAX_NAME_CHARS:
            raise ArchiveRefused(path, f"link targets are limited to {MAX_NAME_CHARS} characters")
        resolved = path.split("/")[:-1]
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    raise ArchiveRefused(
                        path, f"symbolic link points outside the report ({_shown(target)})"
                    )
                resolved.pop()
                continue
            resolved.append(part)
            if kind_of("/".join(resolved)) == LINK:
                raise ArchiveRefused(
                    path,
                    f"symbolic link {_shown(target)} resolves through another symbolic link "
                    f"({_shown('/'.join(resolved))})",
                )
