"""A project's staging area: private work directories and the report locks.

Layout, under the project's staging directory (``<reports_root>/.dqrxfer-staging``
unless configured), created with mode 0700 so a web server serving the report
tree cannot list it::

    work/<label>.<token>/        one finalization's private directory
    work/<label>.<token>.lock    held (flock) while that finalization runs
    locks/report-<xx>.lock       serialises publication into one report

The staging directory must be on the reports root's filesystem: publication
is a rename into the tree.  A work directory whose lock nobody holds belongs
to a finalization that died; :meth:`Staging.remove_stale` deletes it.

Locks are ``flock`` locks: released by the kernel when a process dies, held
across threads, processes and (on NFSv4) hosts.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("dqrxfer.reports")

#: How long a finalization waits for another one publishing into the same report.
REPORT_LOCK_TIMEOUT = 900.0
#: Number of report lock files: reports hash onto them (two reports sharing
#: one only wait for each other), so the count stays bounded forever.
REPORT_LOCK_BUCKETS = 256
#: A busy lock is tried again after FIRST_POLL seconds, then after twice as
#: long each time, up to POLL_INTERVAL (flock has no timed wait).  Small
#: uploads into one report hold its lock about a millisecond each: a fixed
#: 50 ms wait left the report idle most of the time they queued for it.
FIRST_POLL = 0.001
POLL_INTERVAL = 0.05


#: Staging areas (root, reports root) this process has created and checked:
#: a finalization checks its own only once per process, and again when one
#: of its directories turns out to be gone (:meth:`Staging.report_lock`).
_ensured: set[tuple[Path, Path]] = set()


class StagingError(RuntimeError):
    """The staging area is unusable (wrong filesystem, lock not obtained)."""


def lock_file(path: Path, timeout: float | None) -> int | None:
    """Open and flock ``path``; ``None`` if not obtained (``timeout=None``: don't wait).

    Re-opens when the file was unlinked between open and flock (by a cleanup
    that won the race), so the lock held is always on the file at ``path``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        poll = FIRST_POLL
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is None or time.monotonic() >= deadline:
                    os.close(fd)
                    return None
                time.sleep(poll)
                poll = min(poll * 2, POLL_INTERVAL)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def unlock_file(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Staging:
    root: Path
    reports_root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    def ensure(self, again: bool = False) -> None:
        """Create the area and check it shares the reports root's filesystem
        (once per process, unless ``again``)."""
        key = (self.root, self.reports_root)
        if key in _ensured and not again:
            return
        _ensured.discard(key)
        self.reports_root.mkdir(parents=True, exist_ok=True)
        for directory in (self.root, self.work, self.locks):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.root.stat().st_dev != self.reports_root.stat().st_dev:
            raise StagingError(
                f"staging directory {self.root} is not on the filesystem of the reports root "
                f"{self.reports_root}: set the project's staging_dir inside that filesystem"
            )
        _ensured.add(key)

    @contextmanager
    def report_lock(
        self, report_relpath: str, timeout: float = REPORT_LOCK_TIMEOUT
    ) -> Iterator[None]:
        """Hold the lock of one report (``<graceid>_dir/<graceid>_<site>_<rev>``)."""
        bucket = int(hashlib.sha256(report_relpath.encode()).hexdigest(), 16) % REPORT_LOCK_BUCKETS
        path = self.locks / f"report-{bucket:02x}.lock"
        try:
            fd = lock_file(path, timeout)
        except FileNotFoundError:  # the area was removed since it was checked
            self.ensure(again=True)
            fd = lock_file(path, timeout)
        if fd is None:
            raise StagingError(
                f"another publication into {report_relpath} is still running after {timeout:.0f} s"
            )
        try:
            yield
        finally:
            unlock_file(fd)

    @contextmanager
    def workdir(self, label: str) -> Iterator[Path]:
        """A fresh private directory, locked while in use and removed afterwards."""
        name = f"{label}.{secrets.token_hex(6)}"
        lock_path = self.work / f"{name}.lock"
        try:
            fd = lock_file(lock_path, timeout=None)
        except FileNotFoundError:  # the area was removed since it was checked
            self.ensure(again=True)
            fd = lock_file(lock_path, timeout=None)
        if fd is None:  # pragma: no cover - a fresh random name is never locked
            raise StagingError(f"cannot lock {lock_path}")
        path = self.work / name
        try:
            path.mkdir(mode=0o700)
            yield path
        finally:
            try:
                remove_tree(path)
                lock_path.unlink(missing_ok=True)
            finally:
                unlock_file(fd)

    def remove_stale(self, older_than: float = 3600.0, dry_run: bool = False) -> list[Path]:
        """Delete work directories that no live finalization holds; return them.

        A directory is stale when its lock file can be locked (its finalization
        died) or, lacking a lock file, when it is older than ``older_than`` seconds.
        """
        if not self.work.is_dir():
            return []
        removed: list[Path] = []
        now = time.time()
        for entry in sorted(self.work.iterdir()):
            if entry.name.endswith(".lock"):
                if not entry.with_suffix("").exists() and not dry_run:
                    fd = lock_file(entry, timeout=None)
                    if fd is not None:
                        entry.unlink(missing_ok=True)
                        unlock_file(fd)
                continue
            lock_path = entry.with_name(entry.name + ".lock")
            if not lock_path.exists():
                try:
                    age = now - entry.lstat().st_mtime
                except FileNotFoundError:
                    continue
                if age >= older_than:
                    removed.append(entry)
                    if not dry_run:
                        remove_tree(entry)
                continue
            fd = lock_file(lock_path, timeout=None)
            if fd is None:
                continue
            try:
                removed.append(entry)
                if not dry_run:
                    remove_tree(entry)
                    lock_path.unlink(missing_ok=True)
            finally:
                unlock_file(fd)
        for path in removed:
            log.info(
                "%s stale staging directory %s", "would remove" if dry_run else "removed", path
            )
        return removed


def remove_tree(path: Path) -> None:
    """``rmtree`` that tolerates a path that is already gone.

    Staged trees hold only what this server wrote (directories 0755, no
    read-only directory), so a plain removal always succeeds.
    """
    with suppress(FileNotFoundError):
        shutil.rmtree(path)
