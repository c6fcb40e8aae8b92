"""``Database.transaction`` on SQLite, begun and ended on the driver's
connection: it commits and rolls back what both kinds of statement wrote
(the driver's own and SQLAlchemy's, whose transaction then joins the
driver's), a write transaction holds the write lock from its BEGIN, errors
of BEGIN and COMMIT reach the caller as SQLAlchemy's, and no transaction is
left open on the pooled connection, whatever happened."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from dqrxfer.server.db import Database


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    opened = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with opened.transaction(write=True) as connection:
        connection.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        connection.exec_driver_sql(
            "CREATE TABLE child (parent INTEGER REFERENCES parent (id) "
            "DEFERRABLE INITIALLY DEFERRED)"
        )
    yield opened
    opened.dispose()


def _driver(connection: object) -> sqlite3.Connection:
    driver = connection.connection.driver_connection  # type: ignore[attr-defined]
    assert isinstance(driver, sqlite3.Connection)
    return driver


def _stored(database: Database) -> list[int]:
    """The parent rows, read by a connection of its own."""
    path = database.engine.url.database
    assert path is not None
    other = sqlite3.connect(path)
    try:
        return [row[0] for row in other.execute("SELECT id FROM parent ORDER BY id")]
    finally:
        other.close()


def _left_open(database: Database) -> bool:
    """Whether the pooled connection the next transaction gets has a
    transaction open (it is the only one in the pool here)."""
    raw = database.engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        return driver.in_transaction
    finally:
        raw.close()


@pytest.mark.parametrize("through", ["driver", "sqlalchemy", "both"])
def test_commits_and_rolls_back_either_kind_of_statement(database: Database, through: str) -> None:
    def write(connection: object, key: int) -> None:
        if through in ("driver", "both"):
            _driver(connection).execute("INSERT INTO parent VALUES (?)", (key,))
        if through in ("sqlalchemy", "both"):
            connection.execute(  # type: ignore[attr-defined]
                text("INSERT INTO parent VALUES (:key)"), {"key": key + 1000}
            )

    with database.transaction(write=True) as connection:
        write(connection, 1)
        assert _driver(connection).in_transaction
    expected = {"driver": [1], "sqlalchemy": [1001], "both": [1, 1001]}[through]
    assert _stored(database) == expected
    assert not _left_open(database)

    with pytest.raises(RuntimeError, match="refused"), database.transaction(write=True) as again:
        write(again, 2)
        raise RuntimeError("refused")
    assert _stored(database) == expected
    assert not _left_open(database)

    with database.transaction(durable=True) as durable:
        write(durable, 3)
    assert _stored(database) == sorted([*expected, *[k + 2 for k in expected]])


def test_a_write_transaction_holds_the_write_lock_from_its_begin(database: Database) -> None:
    path = database.engine.url.database
    assert path is not None
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with (
            database.transaction(write=True),
            pytest.raises(sqlite3.OperationalError, match="locked"),
        ):
            other.execute("BEGIN IMMEDIATE")
        with database.transaction():  # a reader leaves the write lock free
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()


@pytest.mark.parametrize("through", ["driver", "sqlalchemy"])
def test_a_failed_commit_is_sqlalchemys_error_and_leaves_nothing(
    database: Database, through: str
) -> None:
    """A deferred foreign key fails at COMMIT."""
    with pytest.raises(IntegrityError) as caught, database.transaction(write=True) as connection:
        _driver(connection).execute("INSERT INTO parent VALUES (7)")
        if through == "driver":
            _driver(connection).execute("INSERT INTO child VALUES (99)")
        else:
            connection.execute(text("INSERT INTO child VALUES (99)"))
    assert isinstance(caught.value.orig, sqlite3.IntegrityError)
    assert "FOREIGN KEY" in str(caught.value.orig)
    assert _stored(database) == []
    assert not _left_open(database)


def test_a_failed_begin_is_sqlalchemys_error(database: Database) -> None:
    with database.transaction() as connection:
        connection.exec_driver_sql("PRAGMA busy_timeout=0")  # on the one pooled connection
    path = database.engine.url.database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError) as caught, database.transaction(write=True):
            pytest.fail("began while another connection held the write lock")
        assert isinstance(caught.value.orig, sqlite3.OperationalError)
        assert "BEGIN IMMEDIATE" in str(caught.value)
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert not _left_open(database)
