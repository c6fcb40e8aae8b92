"""One writer per upload across hosts: PostgreSQL session-level advisory locks.

Each held lock is one connection from a small pool of the locker's own
(built from the application's engine URL, so lock holders never starve the
application's transactions of connections).  The key is 64 bits of a hash of
the upload id.  The wait is PostgreSQL's own (``lock_timeout`` around
``pg_advisory_lock``), with no polling.  If the process or host dies, its
connections close and PostgreSQL releases their locks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from . import errors

#: SQLSTATE lock_not_available: lock_timeout expired.
LOCK_NOT_AVAILABLE = "55P03"


def advisory_key(upload_id: str) -> int:
    """A signed 64-bit key for ``upload_id`` (namespaced, so other users of
    advisory locks in the same database do not collide with ours)."""
    digest = hashlib.sha256(f"dqrxfer.tus:{upload_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresLocker:
    def __init__(self, engine: Engine, timeout: float = 10.0, pool_size: int = 8) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("PostgresLocker needs a PostgreSQL engine")
        self.engine = create_engine(
            engine.url,
            pool_size=pool_size,
            max_overflow=4 * pool_size,
            pool_pre_ping=True,
            isolation_level="AUTOCOMMIT",
        )
        self.timeout = timeout

    @contextmanager
    def lock(self, upload_id: str, timeout: float | None = None) -> Iterator[None]:
        wait = self.timeout if timeout is None else timeout
        key = advisory_key(upload_id)
        connection = self.engine.connect()
        try:
            self._acquire(connection, key, wait)
            try:
                yield
            finally:
                self._release(connection, key)
        finally:
            connection.close()

    @staticmethod
    def _acquire(connection: Connection, key: int, wait: float) -> None:
        if wait <= 0:
            got = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
            if not got.scalar():
                raise errors.locked()
            return
        # lock_timeout 0 would mean "wait forever": at least one millisecond.
        milliseconds = max(1, int(wait * 1000))
        connection.execute(text(f"SET lock_timeout = {milliseconds}"))
        try:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                raise errors.locked() from None
            raise
        finally:
            connection.execute(text("RESET lock_timeout"))

    @staticmethod
    def _release(connection: Connection, key: int) -> None:
        try:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        except DBAPIError:
            # The session is broken: its locks died with it.  Never hand a
            # connection that might still hold a lock back to the pool.
            connection.invalidate()

    def discard(self, upload_id: str) -> None:
        """Advisory locks leave nothing behind."""

    def dispose(self) -> None:
        self.engine.dispose()
