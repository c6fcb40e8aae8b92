"""Atomic placement of finished payloads into the report tree.

A single file appears at its final name only complete and durable: it is
hard-linked (or, across filesystems, copied and fsynced) to a hidden
temporary name in the target directory, renamed over the final name, and the
directory is fsynced (at the same time as the parents of any directories
created for it).

A staged archive is published as one step.  The new state of the report is
assembled privately in the staging area (a hard-link copy of the current
report with the archive laid over it), made durable, and then swapped with
the live report directory by ``renameat2(RENAME_EXCHANGE)``: a reader sees
the report entirely before or entirely after the pass, never half of it.
A report that does not exist yet simply appears by one rename.  On a
filesystem without RENAME_EXCHANGE (NFS), the archive is laid over the live
report entry by entry: each file still appears atomically, but a reader may
see some of a pass's files before the others.

Conflicts (a file where the report has a directory, a directory where it has
a file or a link) are found by :func:`check_overlay` before anything changes.
The state a pass would leave is checked whole against the report tree's
invariant (:mod:`.invariants`: every link resolves inside the report, only
files, directories and links) before a reader can see any of it: on the
assembled tree before the swap, or on a private hard-link copy before an
in-place overlay.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from ..tus.syncing import fsync_directory, fsync_together
from .archive import DIRECTORY, FILE, LINK, StagedArchive, check_links
from .invariants import TreeInvariantBroken, check_tree

HASH_BLOCK = 4 * 1024 * 1024
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_exchange_support: dict[int, bool] = {}


class PublishConflict(Exception):
    """The payload cannot be laid over the report as it stands."""

    def __init__(self, path: str, rule: str) -> None:
        self.path = path
        self.rule = rule
        super().__init__(f"{path!r}: {rule}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def make_dirs(path: Path, root: Path, durable: bool = True) -> list[Path]:
    """Create ``path`` (inside ``root``); return the directories whose entries
    changed (the parents of the new directories), deepest first.

    ``durable``: fsync them now.  Otherwise the caller must before it relies
    on the new directories surviving a crash (:func:`publish_file` does, with
    the directory of the published file, all at once).  A directory another
    process created meanwhile counts as new: its creator may not have made it
    durable yet.
    """
    missing = []
    current = path
    while current != root and not current.exists():
        missing.append(current)
        current = current.parent
    if current == root:
        root.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
        changed.insert(0, directory.parent)
    if durable:
        fsync_together([], changed)
    return changed


def kind_at(path: Path) -> str | None:
    """What is at ``path``, without following a final symbolic link."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return FILE  # a parent is a file: the path is blocked by a file
    if stat.S_ISDIR(mode):
        return DIRECTORY
    if stat.S_ISLNK(mode):
        return LINK
    return FILE


def _check_directory_chain(report_dir: Path, relpath: str) -> None:
    """Every component of ``relpath`` must be absent or a real directory."""
    if not relpath:
        return
    current = ""
    for part in relpath.split("/"):
        current = f"{current}/{part}" if current else part
        kind = kind_at(report_dir / current)
        if kind not in (None, DIRECTORY):
            raise PublishConflict(current, f"the report has a {kind} here, not a directory")


def check_file_target(report_dir: Path, relpath: str) -> None:
    """A single file may land at ``relpath`` (relative to the report directory).

    Raises :class:`PublishConflict`, or :class:`TreeInvariantBroken` when the
    file replaces a link that other links resolve through.  Under real
    directories, a file on a missing name or over a file changes no link's
    resolution (see :mod:`.invariants`), so only a replaced link needs the
    whole tree checked.
    """
    parent, _, _name = relpath.rpartition("/")
    _check_directory_chain(report_dir, parent)
    kind = kind_at(report_dir / relpath)
    if kind == DIRECTORY:
        raise PublishConflict(relpath, "the report has a directory of that name")
    if kind == LINK:
        check_tree(report_dir, {relpath: None})


def check_overlay(report_dir: Path, subdir: str, staged: StagedArchive) -> None:
    """Raise :class:`PublishConflict` or :class:`ArchiveRefused` unless ``staged``
    can be laid over the report at ``subdir`` (read-only: changes nothing)."""
    if kind_at(report_dir) is None:  # a new report: only the archive's own links matter
        check_links(staged.links, staged.kind_of)
        return
    _check_directory_chain(report_dir, subdir)
    base = report_dir / subdir if subdir else report_dir
    prefix = f"{subdir}/" if subdir else ""
    for name in sorted(staged.directories):
        kind = kind_at(base / name)
        if kind not in (None, DIRECTORY):
            raise PublishConflict(prefix + name, f"the report has a {kind} here, not a directory")
    for name in [*staged.files, *staged.links]:
        if kind_at(base / name) == DIRECTORY:
            raise PublishConflict(prefix + name, "the report has a directory of that name")

    def kind_of(path: str) -> str | None:
        return staged.kind_of(path) or kind_at(base / path)

    check_links(staged.links, kind_of)


def publish_file(
    source: Path, target: Path, new_directories: Sequence[Path] = (), durable: bool = True
) -> None:
    """Place ``source``'s content at ``target`` atomically (and durably unless
    ``durable`` is false: the fsync policy ``never``).

    ``new_directories``: directories :func:`make_dirs` changed without making
    them durable.  They are fsynced with the target's directory, all at once
    (:func:`fsync_together`: on a busy journal one commit instead of one
    each), after the rename: until the answer nothing is promised, and a
    crash before it leaves at most an empty directory, since the name only
    ever appears with the complete content (``source`` is durable already).
    """
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        try:
            os.link(source, temporary)
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            _copy_durably(source, temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable:
        directories = [target.parent, *(p for p in new_directories if p != target.parent)]
        fsync_together([], directories)


def _copy_durably(source: Path, target: Path) -> None:
    with open(source, "rb") as reader, open(target, "xb") as writer:
        shutil.copyfileobj(reader, writer, HASH_BLOCK)
        writer.flush()
        os.fsync(writer.fileno())


def exchange(first: Path, second: Path) -> None:
    """Swap two directory entries atomically (Linux ``renameat2``)."""
    if not hasattr(_libc, "renameat2"):
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    result = _libc.renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(first), None, str(second))


def supports_exchange(work: Path) -> bool:
    """Whether the filesystem of ``work`` can swap directories atomically (cached per device)."""
    device = work.stat().st_dev
    if device not in _exchange_support:
        first, second = work / ".probe-a", work / ".probe-b"
        first.mkdir()
        second.mkdir()
        try:
            exchange(first, second)
            _exchange_support[device] = True
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            _exchange_support[device] = False
        finally:
            first.rmdir()
            second.rmdir()
    return _exchange_support[device]


def sync_filesystem(path: Path) -> None:
    """Flush the filesystem holding ``path`` (one ``syncfs`` instead of an fsync per file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if hasattr(_libc, "syncfs") and _libc.syncfs(fd) == 0:
            return
        os.sync()
    finally:
        os.close(fd)


def _finish_staged_tree(staged: StagedArchive) -> None:
    """Give directories the tree's mode and create the (checked) links."""
    root = staged.root
    for directory in [root, *(root / name for name in staged.directories)]:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o755)
    for name, target in staged.links.items():
        path = root / name
        if kind_at(path) == FILE:
            path.unlink()
        os.symlink(target, path)


def _clone_tree(source: Path, target: Path) -> None:
    """A copy of ``source`` at ``target`` whose files are hard links (no data copied)."""
    target.mkdir()
    os.chmod(target, stat.S_IMODE(source.stat().st_mode))
    with os.scandir(source) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                _clone_tree(Path(entry.path), target / entry.name)
            else:
                os.link(entry.path, target / entry.name, follow_symlinks=False)


def _overlay(source: Path, target: Path) -> None:
    """Move everything in ``source`` into the existing directory ``target``.

    A directory missing in ``target`` moves over whole (one rename); files and
    links replace what is there, each atomically.
    """
    with os.scandir(source) as entries:
        for entry in entries:
            destination = target / entry.name
            if entry.is_dir(follow_symlinks=False):
                if kind_at(destination) == DIRECTORY:
                    _overlay(Path(entry.path), destination)
                    continue
                os.rename(entry.path, destination)
            else:
                os.replace(entry.path, destination)


def _place_at(staged_root: Path, tree: Path, subdir: str) -> None:
    """Move the staged tree to ``tree/subdir`` (creating the directories in between)."""
    if not subdir:
        _overlay(staged_root, tree)
        return
    destination = tree / subdir
    if kind_at(destination) == DIRECTORY:
        _overlay(staged_root, destination)
        return
    destination.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.rename(staged_root, destination)


def _overlay_links_last(source: Path, target: Path) -> None:
    """Lay ``source`` over the live directory ``target`` entry by entry, links last.

    Every state a reader can see on the way is safe when the end state keeps
    the invariant (checked before): first directories and files (a directory
    on a missing name, or a file, lets no path go where it could not go
    before), then the links the pass replaces are removed (a missing entry
    resolves nothing), then the new links appear one by one (each state is
    the end state with some of its links still missing).
    """
    links: list[tuple[Path, Path]] = []
    _move_files(source, target, links)
    for _link, destination in links:
        if kind_at(destination) == LINK:
            destination.unlink()
    for link, destination in links:
        os.replace(link, destination)


def _move_files(source: Path, target: Path, links: list[tuple[Path, Path]]) -> None:
    with os.scandir(source) as entries:
        for entry in sorted(entries, key=lambda entry: entry.name):
            destination = target / entry.name
            if entry.is_symlink():
                links.append((Path(entry.path), destination))
            elif entry.is_dir(follow_symlinks=False):
                if kind_at(destination) != DIRECTORY:
                    destination.mkdir()
                    os.chmod(destination, 0o755)
                _move_files(Path(entry.path), destination, links)
            else:
                os.replace(entry.path, destination)


def _assemble(staged_root: Path, report_dir: Path, subdir: str, assembled: Path) -> None:
    """The report as the pass would leave it, at ``assembled`` (hard links, no data copied)."""
    _clone_tree(report_dir, assembled)
    _place_at(staged_root, assembled, subdir)
    _chmod_new_dirs(assembled, subdir)


def publish_tree(
    staged: StagedArchive, report_dir: Path, subdir: str, work: Path, durable: bool = True
) -> None:
    """Publish a checked, staged archive into ``report_dir`` at ``subdir``.

    The caller holds the report lock and ran :func:`check_overlay`.  ``work``
    is a private directory on the report tree's filesystem.  Raises
    :class:`TreeInvariantBroken`, with the report unchanged, when the report
    as the pass would leave it breaks the invariant.
    """
    _finish_staged_tree(staged)
    assembled = work / "report"
    existing = kind_at(report_dir)
    if existing not in (None, DIRECTORY):
        raise TreeInvariantBroken(".", f"the report directory is a {existing}, not a directory")
    if existing is None:
        if subdir:
            assembled.mkdir(mode=0o755)
            _place_at(staged.root, assembled, subdir)
            _chmod_new_dirs(assembled, subdir)
        else:
            assembled = staged.root
        check_tree(assembled)
        if durable:
            sync_filesystem(work)
        report_dir.parent.mkdir(parents=True, exist_ok=True)
        os.rename(assembled, report_dir)
    elif supports_exchange(work):
        _assemble(staged.root, report_dir, subdir, assembled)
        check_tree(assembled)
        if durable:
            sync_filesystem(work)
        exchange(assembled, report_dir)
    else:
        # In place (NFS): the end state is checked on a private copy before
        # anything in the live report changes.
        copy = work / "staged-copy"
        _clone_tree(staged.root, copy)
        _assemble(copy, report_dir, subdir, assembled)
        check_tree(assembled)
        if durable:
            sync_filesystem(work)
        destination = report_dir / subdir if subdir else report_dir
        destination.mkdir(mode=0o755, parents=True, exist_ok=True)
        _overlay_links_last(staged.root, destination)
        _chmod_new_dirs(report_dir, subdir)
    if durable:
        fsync_directory(report_dir.parent)
        fsync_directory(report_dir)


def _chmod_new_dirs(tree: Path, subdir: str) -> None:
    current = tree
    for part in subdir.split("/") if subdir else []:
        current = current / part
        os.chmod(current, 0o755)
