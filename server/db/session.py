"""Engine and session factory, with the SQLite settings several workers need."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def _configure_sqlite(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    """WAL lets readers run beside one writer; busy_timeout makes writers queue
    instead of failing at once when several gunicorn workers write."""
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event emits BEGIN
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_sqlite(connection) -> None:  # type: ignore[no-untyped-def]
    """Writers take SQLite's write lock up front (BEGIN IMMEDIATE): a deferred
    transaction that reads and then writes fails with 'database is locked'
    when another worker wrote in between, whatever the busy timeout.

    Sent on the driver's connection: through SQLAlchemy's execution path the
    BEGIN cost as much again as the rest of an empty transaction."""
    immediate = connection.get_execution_options().get("immediate", False)
    connection.connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str) -> Engine:
    engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
    return engine


class Database:
    """One engine and its session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_engine = self.engine.execution_options(immediate=True)
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A session committed on success and rolled back on error.

        ``write=True`` for transactions that read then write: on SQLite they
        take the write lock at BEGIN.
        """
        factory = self._write_sessions if write else self._sessions
        with factory() as session, session.begin():
            yield session

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Connection]:
        """A Core connection in a transaction committed on success and rolled
        back on error: for hot paths where an ORM session costs more than the
        statements (``write`` as for :meth:`session`)."""
        with (self._write_engine if write else self.engine).begin() as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()
