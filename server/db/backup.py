"""Backup and restore of the database, for the upgrade procedure and for disasters.

SQLite: SQLite's online backup API, which copies a consistent snapshot even
while the server writes (WAL included), into a temporary file that is fsynced
and then renamed, so a backup file is never half-written.  Restore copies the
backup back through the same API, under SQLite's own locking.

PostgreSQL: ``pg_dump --format=custom`` and ``pg_restore --clean --if-exists``
(the PostgreSQL client programs must be installed; they must be as new as the
server).  Extra arguments (e.g. ``--schema``) are passed through.

The report tree and the uploads directory are files: back them up with the
file system's tools (snapshots, rsync) at the same time.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.engine import make_url


class BackupError(RuntimeError):
    """A backup or restore could not be made; the message says why."""


def _sqlite_path(database_url: str) -> Path:
    database = make_url(database_url).database
    if not database or database == ":memory:":
        raise BackupError(f"not a file database: {database_url}")
    return Path(database)


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL as a libpq connection URI (no ``+driver``)."""
    url = make_url(database_url)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _atomic_target(output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.close(handle)
    return Path(name)


def _publish(temporary: Path, output: Path) -> None:
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    temporary.replace(output)
    directory = os.open(output.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _copy_sqlite(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.execute("PRAGMA busy_timeout=30000")
        dst.execute("PRAGMA busy_timeout=30000")
        src.backup(dst)
    src.close()
    dst.close()


def _run(command: Sequence[str]) -> None:
    if shutil.which(command[0]) is None:
        raise BackupError(f"{command[0]} not found: install the PostgreSQL client programs")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BackupError(f"{command[0]} failed ({result.returncode}): {result.stderr.strip()}")


def backup(database_url: str, output: Path, extra: Sequence[str] = ()) -> None:
    """Write a backup of the database to ``output`` (replaced atomically)."""
    output = Path(output)
    temporary = _atomic_target(output)
    try:
        if make_url(database_url).get_backend_name() == "sqlite":
            source = _sqlite_path(database_url)
            if not source.is_file():
                raise BackupError(f"no database file at {source}")
            _copy_sqlite(source, temporary)
        elif make_url(database_url).get_backend_name() == "postgresql":
            _run(
                [
                    "pg_dump",
                    "--format=custom",
                    "--no-owner",
                    f"--file={temporary}",
                    f"--dbname={libpq_url(database_url)}",
                    *extra,
                ]
            )
        else:
            raise BackupError(
                f"backups of {make_url(database_url).get_backend_name()} not supported"
            )
        _publish(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)


def restore(database_url: str, source: Path, extra: Sequence[str] = ()) -> None:
    """Replace the database's contents with the backup ``source``.

    Stop the server first: a restore under a running server would mix its
    writes with the restored state.
    """
    source = Path(source)
    if not source.is_file():
        raise BackupError(f"no backup file at {source}")
    backend = make_url(database_url).get_backend_name()
    if backend == "sqlite":
        try:
            with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as check:
                check.execute("PRAGMA schema_version").fetchone()
            check.close()
        except sqlite3.DatabaseError as error:
            raise BackupError(f"{source} is not an SQLite database: {error}") from None
        target = _sqlite_path(database_url)
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_sqlite(source, target)
    elif backend == "postgresql":
        _run(
            [
                "pg_restore",
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                "--exit-on-error",
                f"--dbname={libpq_url(database_url)}",
                *extra,
                str(source),
            ]
        )
    else:
        raise BackupError(f"restores of {backend} not supported")
