"""Atomic placement of a finished payload into the report tree.

A file appears at its final name only complete and durable: it is hard-linked
(or, across filesystems, copied and fsynced) to a hidden temporary name in the
target directory, renamed over the final name, and the directory is fsynced.
Publishing the same upload twice gives the same tree.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
from pathlib import Path

from ..tus.store import fsync_directory

HASH_BLOCK = 4 * 1024 * 1024


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def make_dirs(path: Path, root: Path) -> None:
    """Create ``path`` (inside ``root``) and fsync each new directory's parent."""
    root.mkdir(parents=True, exist_ok=True)
    missing = []
    current = path
    while current != root and not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        fsync_directory(directory.parent)


def publish_file(source: Path, target: Path) -> None:
    """Place ``source``'s content at ``target`` atomically and durably."""
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
    fsync_directory(target.parent)


def _copy_durably(source: Path, target: Path) -> None:
    with open(source, "rb") as reader, open(target, "xb") as writer:
        shutil.copyfileobj(reader, writer, HASH_BLOCK)
        writer.flush()
        os.fsync(writer.fileno())
