"""Statements of the per-upload path, run on SQLite's own cursor.

SQLAlchemy Core costs 30 to 100 µs a statement here (finding the compiled
form in its cache, an execution context, events, a result object) against
3 to 10 µs for the statement itself in the ``sqlite3`` module; a small
report upload runs about ten.  A :class:`Prepared` statement is compiled
once per dialect by SQLAlchemy, with its bound values converted by the
types of its columns as SQLAlchemy converts them (SQLite's datetimes are
text), and, on SQLite, then executed on the driver's connection inside the
transaction SQLAlchemy began.  Errors are wrapped as SQLAlchemy wraps them
(``sqlalchemy.exc.IntegrityError`` and so on, the driver's error in
``orig``).  On other databases (PostgreSQL) it runs through
``Connection.execute`` as any statement.

Only for statements whose results hold no values that need converting back
(no datetimes), without ``IN`` lists expanded at execution, and, for an
INSERT, given every column that has a Python-side default.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

_Processor = Callable[[Any], Any] | None


class _SqliteForm:
    """The statement as SQLite's driver takes it: SQL with ``?`` and, for
    each position, the parameter's name, its fixed value (literals in the
    statement) and its converter."""

    def __init__(self, statement: Executable, dialect: Dialect, keys: Sequence[str] | None) -> None:
        compiled: Any = statement.compile(dialect=dialect, column_keys=keys)  # type: ignore[attr-defined]
        if compiled.insert_prefetch or compiled.update_prefetch:
            raise ValueError("a Prepared statement must be given the columns with defaults")
        self.sql: str = compiled.string
        self.positions: list[tuple[str, Any, _Processor]] = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            if bind.expanding:
                raise ValueError("a Prepared statement cannot expand IN lists")
            processor = bind.type._cached_bind_processor(dialect)
            self.positions.append((name, bind.value, processor))

    def values(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, fixed, processor in self.positions:
            value = params.get(name, fixed)
            out.append(value if processor is None or value is None else processor(value))
        return tuple(out)


class Prepared:
    """One statement of a hot path; see the module's docstring.

    ``keys``: for an INSERT or UPDATE, the names of the columns its
    parameters give (SQLAlchemy compiles a column list from them).
    """

    def __init__(self, statement: Executable, keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.keys = list(keys) if keys is not None else None
        self._sqlite: _SqliteForm | None = None

    def _form(self, dialect: Dialect) -> _SqliteForm:
        form = self._sqlite
        if form is None:
            form = self._sqlite = _SqliteForm(self.statement, dialect, self.keys)
        return form

    def _run(self, connection: Connection, params: Mapping[str, Any]) -> sqlite3.Cursor:
        form = self._form(connection.dialect)
        driver = connection.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        values = form.values(params)
        try:
            return driver.execute(form.sql, values)
        except sqlite3.Error as error:
            raise DBAPIError.instance(form.sql, values, error, sqlite3.Error) from error

    def rows(self, connection: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row of the result, as tuples."""
        if connection.dialect.name != "sqlite":
            return [tuple(row) for row in connection.execute(self.statement, dict(params))]
        cursor = self._run(connection, params)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    def first(self, connection: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of the result, or None."""
        found = self.rows(connection, params)
        return found[0] if found else None

    def scalar(self, connection: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the first row, or None without a row."""
        row = self.first(connection, params)
        return None if row is None else row[0]

    def execute(self, connection: Connection, params: Mapping[str, Any]) -> None:
        """Run a statement that returns no rows."""
        if connection.dialect.name != "sqlite":
            connection.execute(self.statement, dict(params))
            return
        self._run(connection, params).close()

    def insert(self, connection: Connection, params: Mapping[str, Any]) -> int:
        """Run a single-row INSERT; the new row's integer primary key."""
        if connection.dialect.name != "sqlite":
            key = connection.execute(self.statement, dict(params)).inserted_primary_key
            assert key is not None  # a single-row INSERT always has one
            return int(key[0])
        cursor = self._run(connection, params)
        try:
            assert cursor.lastrowid is not None  # set by every INSERT
            return cursor.lastrowid
        finally:
            cursor.close()

    def execute_many(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once for each of ``rows`` (several rows' INSERT or UPDATE)."""
        if connection.dialect.name != "sqlite":
            connection.execute(self.statement, [dict(row) for row in rows])
            return
        form = self._form(connection.dialect)
        driver = connection.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        values = [form.values(row) for row in rows]
        try:
            driver.executemany(form.sql, values).close()
        except sqlite3.Error as error:
            raise DBAPIError.instance(form.sql, values, error, sqlite3.Error) from error
