"""Engine and session factory, with the SQLite settings several workers need."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from .walsync import WalSync


def _configure_sqlite(dbapi_connection: sqlite3.Connection, record: ConnectionPoolEntry) -> None:
    """WAL lets readers run beside one writer; busy_timeout makes writers queue
    instead of failing at once when several gunicorn workers write."""
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event emits BEGIN
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as error:
        full = _full_directory(dbapi_connection)
        if full is None:
            raise
        raise OSError(
            errno.ENOSPC, f"no space left for the database's write-ahead log in {full}"
        ) from error
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    # In WAL mode, NORMAL syncs the log only at checkpoints (a power loss may
    # take the last commits, never corrupts); durable transactions flush it
    # after their commit (Database.transaction).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _full_directory(dbapi_connection: sqlite3.Connection) -> str | None:
    """The directory of the connection's database file if its filesystem has
    no space left, else None.

    A new connection on a full disk fails to create the write-ahead log's
    index (``-shm``) with SQLite's generic "disk I/O error", not "database or
    disk is full": without this, a creation on a full database disk would be
    a 500 instead of the 507 that says the storage is full."""
    try:
        rows = dbapi_connection.execute("PRAGMA database_list").fetchall()
        path = next((row[2] for row in rows if row[1] == "main"), "")
        if not path:
            return None
        directory = os.path.dirname(path)
        stats = os.statvfs(directory)
    except (sqlite3.Error, OSError):
        return None
    return directory if stats.f_bavail * stats.f_frsize < _ROOM_FOR_THE_LOG else None


#: Free bytes under which a failure to open the write-ahead log is taken for a full disk.
_ROOM_FOR_THE_LOG = 1024 * 1024


def _begin_sqlite(connection: Connection) -> None:
    """Writers take SQLite's write lock up front (BEGIN IMMEDIATE): a deferred
    transaction that reads and then writes fails with 'database is locked'
    when another worker wrote in between, whatever the busy timeout.

    Sent on the driver's connection: through SQLAlchemy's execution path the
    BEGIN cost as much again as the rest of an empty transaction."""
    driver = connection.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)  # a connection in use has its driver's
    if driver.in_transaction:
        # Begun on the driver by Database.transaction: SQLAlchemy's own
        # transaction, begun at a statement it executes, joins it.
        return
    options = connection.get_execution_options()
    driver.execute("BEGIN IMMEDIATE" if options.get("immediate", False) else "BEGIN")


def make_engine(url: str) -> Engine:
    engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        _create_private(engine.url.database)
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
        self._durable_engine = self.engine.execution_options(immediate=True, durable=True)
        self._sqlite = self.engine.dialect.name == "sqlite"
        #: SQLite in a file: durable commits flush its log after the commit
        self._wal: WalSync | None = None
        path = (self.engine.url.database or "").removeprefix("file:").partition("?")[0]
        if self._sqlite and path and path != ":memory:":
            self._wal = WalSync(path)

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
    def transaction(self, write: bool = False, durable: bool = False) -> Iterator[Connection]:
        """A Core connection in a transaction committed on success and rolled
        back on error: for hot paths where an ORM session costs more than the
        statements (``write`` as for :meth:`session`).

        ``durable=True`` (implies ``write``): the commit is on disk when this
        returns, whatever the database's default: on SQLite the write-ahead
        log is flushed after the commit (and with it every earlier commit),
        outside the write lock, so that commits finishing together are flushed
        together (:mod:`.walsync`); PostgreSQL commits with
        ``synchronous_commit`` on.  For the commits that files already
        published, or an upload about to be marked completed, rely on.
        """
        if self._sqlite:
            with self._driver_transaction(write or durable) as connection:
                yield connection
            if durable and self._wal is not None:
                self._wal.sync()
            return
        if not durable:
            with (self._write_engine if write else self.engine).begin() as connection:
                yield connection
            return
        with self._durable_engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SET LOCAL synchronous_commit TO on")
            yield connection

    @contextmanager
    def _driver_transaction(self, write: bool) -> Iterator[Connection]:
        """SQLite: a pooled connection whose transaction is begun and ended
        on the driver's connection.

        Through SQLAlchemy's ``Connection.begin`` and its commit an empty
        transaction cost twice what BEGIN and COMMIT cost on the driver, and
        every small upload makes three.  The statements of the upload path
        run on the driver too (:mod:`.prepared`); one that runs through
        ``Connection.execute`` makes SQLAlchemy begin a transaction of its
        own, which joins the driver's (``_begin_sqlite`` sees it open) and is
        then committed or rolled back through SQLAlchemy, so that its record
        of the connection stays right.  Errors of BEGIN, COMMIT and ROLLBACK
        are wrapped as SQLAlchemy wraps them (``sqlalchemy.exc.OperationalError``
        and so on, the driver's error as ``orig``), and a transaction that
        failed, at its COMMIT too, is rolled back before the connection goes
        back to the pool.
        """
        connection = self.engine.connect()
        try:
            driver = connection.connection.driver_connection
            assert isinstance(driver, sqlite3.Connection)  # a connection in use has its driver's
            _on_driver(driver, "BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield connection
                if connection.in_transaction():
                    connection.commit()
                else:
                    _on_driver(driver, "COMMIT")
            except BaseException:
                # A COMMIT that failed (a deferred constraint, a full disk)
                # may leave the transaction open: it is rolled back too.
                if connection.in_transaction():
                    connection.rollback()
                if driver.in_transaction:
                    _on_driver(driver, "ROLLBACK")
                raise
        finally:
            connection.close()

    def dispose(self) -> None:
        self.engine.dispose()
        if self._wal is not None:
            self._wal.close()


def _on_driver(driver: sqlite3.Connection, statement: str) -> None:
    """BEGIN, COMMIT or ROLLBACK on SQLite's driver, its errors wrapped as
    SQLAlchemy wraps them."""
    try:
        if statement == "COMMIT":
            driver.commit()
        elif statement == "ROLLBACK":
            driver.rollback()
        else:
            driver.execute(statement)
    except sqlite3.Error as error:
        raise DBAPIError.instance(statement, (), error, sqlite3.Error) from error


def _create_private(path: str | None) -> None:
    """Create a new SQLite database file readable by the server's user only
    (SQLite gives its -wal and -shm files the database file's mode)."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
