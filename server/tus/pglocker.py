"""One writer per upload across hosts: PostgreSQL session-level advisory locks.

Each held lock is one connection from a small pool of the locker's own
(built from the application's engine URL, so lock holders never starve the
application's transactions of connections).  The key is 64 bits of a hash of
the upload id.  The wait is PostgreSQL's own (``lock_timeout`` around
``pg_advisory_lock``), with no polling.  If the process dies, its
connections close and PostgreSQL releases their locks.

If the whole host dies (power lost, cable cut), nothing closes its
connections: PostgreSQL keeps the locks until its kernel gives up on the
silent peer, which with the default TCP settings takes hours.  So the locker's
connections ask for TCP keepalives on both ends (libpq's ``keepalives*``
parameters on ours, the server's ``tcp_keepalives_*`` and ``tcp_user_timeout``
settings through ``options``), sized so that the server drops a silent
holder's session, and with it its locks, within ``dead_host_timeout`` seconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from . import errors
from .keepalive import DEFAULT_DEAD_HOST_TIMEOUT, keepalive_connect_args
from .locker import Hold

#: SQLSTATE lock_not_available: lock_timeout expired.
LOCK_NOT_AVAILABLE = "55P03"


def advisory_key(upload_id: str, namespace: str = "dqrxfer.tus") -> int:
    """A signed 64-bit key for ``upload_id`` (namespaced, so other users of
    advisory locks in the same database do not collide with ours)."""
    digest = hashlib.sha256(f"{namespace}:{upload_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def release_key(upload_id: str) -> int:
    """The key whose shared locks ask the holder of ``upload_id``'s lock to let go."""
    return advisory_key(upload_id, "dqrxfer.tus.release")


class PostgresLocker:
    def __init__(
        self,
        engine: Engine,
        timeout: float = 10.0,
        pool_size: int = 8,
        dead_host_timeout: int = DEFAULT_DEAD_HOST_TIMEOUT,
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("PostgresLocker needs a PostgreSQL engine")
        options = engine.url.query.get("options", "")
        self.engine = create_engine(
            engine.url,
            pool_size=pool_size,
            max_overflow=4 * pool_size,
            pool_pre_ping=True,
            isolation_level="AUTOCOMMIT",
            connect_args=keepalive_connect_args(
                dead_host_timeout, options if isinstance(options, str) else " ".join(options)
            ),
        )
        self.timeout = timeout

    @contextmanager
    def lock(
        self, upload_id: str, timeout: float | None = None, take_over: bool = False
    ) -> Iterator[Hold]:
        wait = self.timeout if timeout is None else timeout
        key = advisory_key(upload_id)
        connection = self.engine.connect()
        try:
            self._acquire(connection, key, wait, release_key(upload_id) if take_over else None)
            try:
                yield _PgHold(connection, release_key(upload_id))
            finally:
                self._release(connection, key)
        finally:
            connection.close()

    @staticmethod
    def _acquire(connection: Connection, key: int, wait: float, asking: int | None) -> None:
        """Take the lock ``key``, waiting up to ``wait`` seconds; while
        waiting, ask its holder to let go by holding ``asking`` shared."""
        got = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
        if got.scalar():
            return
        if wait <= 0:
            raise errors.locked()
        # lock_timeout 0 would mean "wait forever": at least one millisecond.
        milliseconds = max(1, int(wait * 1000))
        connection.execute(text(f"SET lock_timeout = {milliseconds}"))
        try:
            if asking is not None:
                # Waits only while a holder looks (one statement), if at all.
                connection.execute(text("SELECT pg_advisory_lock_shared(:key)"), {"key": asking})
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                raise errors.locked() from None
            raise
        finally:
            if asking is not None:
                connection.execute(text("SELECT pg_advisory_unlock_shared(:key)"), {"key": asking})
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


class _PgHold:
    """A :class:`~.locker.Hold` of :class:`PostgresLocker`, asking on the
    holding connection whether anyone holds the release key shared."""

    def __init__(self, connection: Connection, asking: int) -> None:
        self.connection = connection
        self.asking = asking

    def release_requested(self) -> bool:
        try:
            free = self.connection.execute(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": self.asking}
            ).scalar()
        except DBAPIError:
            # The session is broken, and with it the lock: stop writing.
            return True
        return not free
