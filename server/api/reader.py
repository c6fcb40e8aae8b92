"""The links lookup's own way to the database: as few round trips as possible.

Every report page polls ``/api/v1/events/<graceid>/reports``, so the lookup
is the hottest read of the server.  On PostgreSQL the application's engine
checks each pooled connection with a ping before use and wraps each query in
BEGIN ... ROLLBACK: four round trips, each a wait for the database process,
which on a busy host is most of the time spent.  The reader uses a small pool
of its own in autocommit mode and without the ping (one round trip per
lookup); a connection that turns out to be dead is dropped by SQLAlchemy and
the lookup is retried once on a fresh one.

SQLite runs in-process (no round trips): the reader is the application's
engine itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import DBAPIError

T = TypeVar("T")

POOL_SIZE = 4
MAX_OVERFLOW = 4


class Reader:
    """Runs single-statement reads, retrying once when the connection was dead."""

    def __init__(self, engine: Engine, own: bool) -> None:
        self.engine = engine
        self._own = own

    @classmethod
    def for_engine(cls, engine: Engine) -> Reader:
        if engine.dialect.name != "postgresql":
            return cls(engine, own=False)
        reader = create_engine(
            engine.url,
            isolation_level="AUTOCOMMIT",
            pool_pre_ping=False,
            pool_size=POOL_SIZE,
            max_overflow=MAX_OVERFLOW,
            pool_recycle=3600,
        )
        return cls(reader, own=True)

    def run(self, read: Callable[[Connection], T]) -> T:
        try:
            with self.engine.connect() as connection:
                return read(connection)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
        # The server closed that connection (restart, idle timeout): SQLAlchemy
        # has dropped it and the pool's others from before; once more, anew.
        with self.engine.connect() as connection:
            return read(connection)

    def dispose(self) -> None:
        if self._own:
            self.engine.dispose()
