"""Whether what a command is pointed at (its database, its data directory)
exists, found out without creating it.

Opening an SQLite database creates its file (and ``Database`` creates it
with the server's private mode on purpose), so a command that only reads
would leave an empty database, and the directory made for it, behind a
mistyped ``--data-dir``.  Such commands ask :func:`require_database` first.
A PostgreSQL database cannot be made by connecting to it: a missing one is
the server's own one-line error when the command connects.
"""

from __future__ import annotations

from pathlib import Path

#: What to run to make a database where there is none.
CREATE_HINT = "'dqrxfer-server db upgrade' creates one"


class Missing(RuntimeError):
    """What the command works on is not there; the message says where it
    looked (and how to make it)."""


def sqlite_file(database_url: str) -> Path | None:
    """The file of an SQLite ``database_url``; None for other databases and
    for SQLite in memory."""
    from sqlalchemy.engine import make_url  # not at import: see server/cli.py

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def require_database(database_url: str) -> None:
    """Raise :class:`Missing` when ``database_url`` names an SQLite file that
    does not exist (nothing is created either way)."""
    path = sqlite_file(database_url)
    if path is not None and not path.is_file():
        raise Missing(f"no database at {path} (wrong --data-dir or --config? {CREATE_HINT})")


def require_data_dir(path: Path) -> None:
    """Raise :class:`Missing` when the data directory ``path`` does not exist."""
    if not path.is_dir():
        raise Missing(f"no data directory at {path} (wrong --data-dir or --config?)")
