"""Report trees on disk that did not arrive by upload: a directory an operator
registers (staged like an archive, by the same rules) and the files of an
existing report (for re-indexing)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config import TarLimits
from .archive import (
    DIRECTORY,
    FILE,
    ArchiveRefused,
    StagedArchive,
    StagedFile,
    check_links,
    normalise_member_name,
)

BLOCK = 1024 * 1024


def _copy_hashing(source: Path, target: Path) -> StagedFile:
    """Copy one file (mode 0644, or 0755 if executable; mtime kept), hashing as it goes."""
    digest = hashlib.sha256()
    size = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with (
        open(source, "rb", buffering=0) as reader,
        open(os.open(target, flags, 0o600), "wb", buffering=0) as writer,
    ):
        while block := reader.read(BLOCK):
            digest.update(block)
            writer.write(block)
            size += len(block)
    info = source.stat()
    os.chmod(target, 0o755 if info.st_mode & 0o100 else 0o644)
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    return StagedFile(size, digest.hexdigest())


def stage_directory(source: Path, staging: Path, limits: TarLimits) -> StagedArchive:
    """Copy ``source`` into the empty directory ``staging`` by the rules archives follow.

    Names, types (files, directories and links only), link targets and the
    limits on count and bytes are checked for every entry before anything is
    copied; refusals are :class:`ArchiveRefused` naming the entry.
    """
    staged = StagedArchive(root=staging)
    entries: list[tuple[str, Path, str]] = []
    total = 0
    for path in _walk(source):
        relative = path.relative_to(source).as_posix()
        name = normalise_member_name(relative)
        mode = path.lstat().st_mode
        staged.members += 1
        if staged.members > limits.max_members:
            raise ArchiveRefused(
                relative, f"more than {limits.max_members} entries (limit tar_max_members)"
            )
        if stat.S_ISLNK(mode):
            target = os.readlink(path)
            check_links({name: target}, lambda _path: None)
            staged.links[name] = target
        elif stat.S_ISDIR(mode):
            staged.directories.add(name)
            entries.append((name, path, DIRECTORY))
        elif stat.S_ISREG(mode):
            total += path.lstat().st_size
            if total > limits.max_bytes:
                raise ArchiveRefused(
                    relative, f"the files add up to more than {limits.max_bytes} bytes"
                )
            staged.files[name] = StagedFile(path.lstat().st_size, "")
            entries.append((name, path, FILE))
        else:
            raise ArchiveRefused(relative, "only files, directories and symbolic links are allowed")
    if not staged.files and not staged.links:
        raise ArchiveRefused(None, f"{source} contains no files")
    check_links(staged.links, lambda path: staged.kind_of(path))
    for name, path, kind in entries:
        destination = staging / name
        if kind == DIRECTORY:
            destination.mkdir(mode=0o755, parents=True, exist_ok=True)
        else:
            destination.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            staged.files[name] = _copy_hashing(path, destination)
    return staged


def _walk(root: Path) -> Iterator[Path]:
    """Every entry under ``root``, parents before children, not following links."""
    with os.scandir(root) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        path = Path(entry.path)
        yield path
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path)


@dataclass(frozen=True)
class FoundFile:
    relpath: str
    size: int
    mtime: float


def report_files(report_dir: Path) -> Iterator[FoundFile]:
    """The regular files of a report as they are on disk (links and hidden entries skipped)."""
    for directory, dirs, files in os.walk(report_dir):
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(directory) / name
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                relpath = path.relative_to(report_dir).as_posix()
                yield FoundFile(relpath, info.st_size, info.st_mtime)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(4 * BLOCK):
            digest.update(block)
    return digest.hexdigest()
