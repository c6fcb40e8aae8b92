"""A real, small filesystem that tests fill up: a tmpfs mounted for one test.

Mounting needs root (CI runs as root); where the machine cannot mount, the
test is skipped and says why.  A tmpfs answers a write past its size with
``ENOSPC`` exactly as a full disk does (``RLIMIT_FSIZE`` would give
``EFBIG``, which is not the same condition).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FILLER = "filler.bin"
_BLOCK = b"\xa5" * 65536


@contextlib.contextmanager
def small_filesystem(path: Path, size: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` bytes at ``path`` (created) for the block;
    skip the test if this machine cannot mount one."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "dqrxfer-test", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs for a real full disk (needs root and mount rights): "
            f"{mounted.stderr.strip() or mounted.returncode}"
        )
    try:
        yield path
    finally:
        # Lazy: a server process that is still winding down cannot keep it busy.
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(path: Path) -> Path:
    """Write a filler file into ``path`` until its filesystem is full; return it."""
    filler = path / FILLER
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                os.write(fd, _BLOCK)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                break
        # The last pages a short write left.
        while True:
            try:
                if os.write(fd, _BLOCK[:4096]) == 0:
                    break
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    assert free_bytes(path) == 0, free_bytes(path)
    return filler


def release(filler: Path, count: int | None = None) -> None:
    """Free ``count`` bytes of the filler (all of it if None)."""
    if count is None:
        filler.unlink()
        return
    os.truncate(filler, max(0, filler.stat().st_size - count))
