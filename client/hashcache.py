"""The sha256 of local files, remembered across runs while the files stay as they were.

Comparing a report with the server's copy (:mod:`~dqrxfer.reupload`) needs
the sha256 of every local file whose path and size the server has; a
``dqr-batch-upload`` run from cron over a large tree would read all of it
each time.  :class:`HashCache` keeps each digest with the file's stamp (size,
modification time, inode, device: :class:`~dqrxfer.regions.FileStamp`) in a
SQLite file beside the resume store (``$XDG_CACHE_HOME/dqrxfer/hashes.sqlite``,
or under ``$DQRXFER_CACHE_DIR``) and hands it back while the stamp is the
same; any change of the stamp means the file is read again.

A file modified less than :data:`RACY_SECONDS` before it was hashed is not
remembered: a write in the same tick of the clock could leave its stamp as
it was.  Entries not used for :data:`MAX_AGE` are dropped.  A cache that
cannot be opened or written (read-only home, say) is no error: the files
are then hashed every time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from .regions import FileStamp
from .resume import MAX_AGE, default_directory

log = logging.getLogger("dqr-xfer")

#: A file changed this recently (seconds) is hashed, but its digest not kept.
RACY_SECONDS = 2.0

_SCHEMA = """CREATE TABLE IF NOT EXISTS hashes (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, device INTEGER,
    sha256 TEXT, used REAL)"""


def default_path() -> Path:
    return default_directory().parent / "hashes.sqlite"


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class HashCache:
    """Digests of local files by path, valid while the file's stamp holds."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._opened = False

    def _connection(self) -> sqlite3.Connection | None:
        if not self._opened:
            self._opened = True
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
                with db:
                    db.execute(_SCHEMA)
                    db.execute("DELETE FROM hashes WHERE used < ?", (time.time() - MAX_AGE,))
                self._db = db
            except (OSError, sqlite3.Error) as error:
                log.debug("hash cache %s not used: %s", self.path, error)
        return self._db

    def get(self, path: Path) -> str | None:
        """The remembered sha256 of ``path`` if it is still as it was hashed."""
        key = os.path.realpath(path)
        stamp = FileStamp.of(os.stat(key))
        with self._lock:
            db = self._connection()
            if db is None:
                return None
            try:
                row = db.execute(
                    "SELECT size, mtime_ns, inode, device, sha256 FROM hashes WHERE path = ?",
                    (key,),
                ).fetchone()
                if row is None or FileStamp(*row[:4]) != stamp:
                    return None
                with db:
                    db.execute("UPDATE hashes SET used = ? WHERE path = ?", (time.time(), key))
            except sqlite3.Error as error:
                log.debug("hash cache %s: %s", self.path, error)
                return None
        log.debug("sha256 of %s from the hash cache", path)
        return str(row[4])

    def put(self, path: Path, stamp: FileStamp, sha256: str) -> None:
        """Remember ``sha256`` as the digest of ``path`` in the state ``stamp``
        (unless that state is too recent to be told from the next)."""
        if time.time() - stamp.mtime_ns / 1e9 < RACY_SECONDS:
            return
        key = os.path.realpath(path)
        with self._lock:
            db = self._connection()
            if db is None:
                return
            try:
                with db:
                    db.execute(
                        "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            key,
                            stamp.size,
                            stamp.mtime_ns,
                            stamp.inode,
                            stamp.device,
                            sha256,
                            time.time(),
                        ),
                    )
            except sqlite3.Error as error:
                log.debug("hash cache %s: %s", self.path, error)

    def sha256(self, path: Path) -> str:
        """The sha256 of ``path``: remembered, or read now (and remembered if
        the file did not change while it was read)."""
        known = self.get(path)
        if known is not None:
            return known
        before = FileStamp.of(os.stat(path))
        digest = file_sha256(path)
        if FileStamp.of(os.stat(path)) == before:
            self.put(path, before, digest)
        return digest

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
            self._db = None
