"""Statements run on SQLite's cursor (``server/db/prepared.py``) write and
read what SQLAlchemy's execution path does, fail as it fails, and run
through SQLAlchemy elsewhere (PostgreSQL); the finalization of a small
upload takes the few statements its design says."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from dqrxfer.server.config import load_settings
from dqrxfer.server.db import Database, Event, Upload
from dqrxfer.server.db.prepared import Prepared
from dqrxfer.server.reports import ledger
from dqrxfer.server.services import open_database
from support.tus import write_config

DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
MOMENT = datetime(2026, 12, 6, 22, 30, 1, 250000, tzinfo=UTC)


def _database(tmp_path: Path, url: str | None = None) -> Database:
    keys: dict[str, object] = {} if url is None else {"database_url": url}
    config = write_config(tmp_path / "config.toml", **keys)
    return open_database(load_settings(config, tmp_path / "data"))


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The schema on SQLite, then on PostgreSQL."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    opened = _database(tmp_path, url)
    yield opened
    opened.dispose()


def _row(upload_id: str) -> dict[str, object]:
    return {
        "id": upload_id,
        "principal": "alice",
        "project": "O4",
        "graceid": "S230518h",
        "site": "llo",
        "revision": 3,
        "subdir": "",
        "filename": "a.txt",
        "kind": "file",
        "sha256": None,
        "length": 5,
        "state": "receiving",
        "created": MOMENT,
    }


def test_prepared_statements_store_and_read_what_core_does(database: Database) -> None:
    uploads = Upload.__table__
    fast_insert = Prepared(insert(uploads), list(_row("x")))
    # A literal in the statement ("published") and a bound datetime.
    fast_update = Prepared(
        update(uploads)
        .where(uploads.c.id == bindparam("upload_key"))
        .values(state="published", finished=bindparam("when_key"))
    )
    with database.transaction(write=True) as connection:
        fast_insert.execute(connection, _row("fast"))
        connection.execute(insert(uploads), _row("core"))
        fast_update.execute(connection, {"upload_key": "fast", "when_key": MOMENT})
        connection.execute(
            update(uploads).where(uploads.c.id == "core").values(state="published", finished=MOMENT)
        )
    with database.session() as session:
        fast, core = (session.get(Upload, key) for key in ("fast", "core"))
        assert fast is not None and core is not None
        for column in ("created", "finished", "state", "length", "revision", "sha256"):
            assert getattr(fast, column) == getattr(core, column), column
        assert fast.state == "published"
    if database.engine.dialect.name == "sqlite":  # the very same text in the file
        with database.transaction() as connection:
            stored = connection.exec_driver_sql(
                "SELECT created, finished FROM uploads ORDER BY id"
            ).all()
        assert stored[0] == stored[1]
    with database.transaction() as connection:
        found = Prepared(select(uploads.c.state, uploads.c.length).order_by(uploads.c.id))
        assert found.rows(connection, {}) == [("published", 5), ("published", 5)]
        assert found.first(connection, {}) == ("published", 5)
        assert found.scalar(connection, {}) == "published"


def test_prepared_insert_returns_the_key_and_fails_as_core_does(database: Database) -> None:
    events = Event.__table__
    add = Prepared(insert(events), ["graceid", "created"])
    with database.transaction(write=True) as connection:
        first = add.insert(connection, {"graceid": "S1", "created": MOMENT})
        second = add.insert(connection, {"graceid": "S2", "created": MOMENT})
        assert second == first + 1
    with pytest.raises(IntegrityError) as caught, database.transaction(write=True) as again:
        add.insert(again, {"graceid": "S1", "created": MOMENT})
    if database.engine.dialect.name == "sqlite":
        assert isinstance(caught.value.orig, sqlite3.IntegrityError)


def test_prepared_refuses_what_it_cannot_run_on_the_cursor(tmp_path: Path) -> None:
    database = _database(tmp_path)
    uploads = Upload.__table__
    try:
        with database.transaction() as connection:
            expanding = Prepared(
                select(uploads.c.id).where(uploads.c.id.in_(bindparam("ids", expanding=True)))
            )
            with pytest.raises(ValueError, match="IN lists"):
                expanding.rows(connection, {"ids": ["a"]})
            # "created" has a default computed in Python: it must be given.
            missing_default = Prepared(insert(Event.__table__), ["graceid"])
            with pytest.raises(ValueError, match="columns with defaults"):
                missing_default.insert(connection, {"graceid": "S1"})
    finally:
        database.dispose()


def test_a_small_upload_into_a_new_report_takes_few_statements(tmp_path: Path) -> None:
    """The start of the finalization in one statement, the place in one, and
    the record of a new report without a lookup of its files or a count of
    its totals (counted from the statements SQLite itself runs)."""
    database = _database(tmp_path)
    try:
        with database.transaction(write=True) as connection:
            ledger.insert_upload(connection, _row("u1"))
        statements: list[str] = []
        with database.transaction(write=True) as connection:
            driver = connection.connection.driver_connection
            assert isinstance(driver, sqlite3.Connection)
            driver.set_trace_callback(statements.append)
            start = ledger.finalization_start(connection, "u1", "S230518h", "O4", "llo", 3)
            place = ledger.take_place(
                connection, "u1", start.outcome, "S230518h", "O4", "llo", 3, cut=start.cut
            )
            driver.set_trace_callback(None)
        assert start.report_path is None and start.cut == 0
        assert place.order == 1 and place.cut_earlier == ()
        assert len(statements) == 2, statements
        change = ledger.ReportChange(
            graceid="S230518h",
            project="O4",
            site="llo",
            revision=3,
            path="S230518h_dir/S230518h_llo_3",
            url="/reports/O4/S230518h_dir/S230518h_llo_3/",
            files=[ledger.PublishedFile("a.txt", 5, "0" * 64)],
            removed=[],
            upload_id="u1",
            principal="alice",
            when=MOMENT,
        )
        statements.clear()
        with database.transaction(write=True) as connection:
            driver = connection.connection.driver_connection
            assert isinstance(driver, sqlite3.Connection)
            driver.set_trace_callback(statements.append)
            ledger.record_publication(connection, ledger.Publication(change, "u1", "0" * 64))
            driver.set_trace_callback(None)
        # report lookup, event lookup and insert, report insert, file insert, upload published
        assert len(statements) == 6, statements
        assert not any("FROM report_files" in sql for sql in statements)
        with database.transaction() as connection:
            totals = connection.exec_driver_sql("SELECT file_count, total_bytes FROM reports").all()
        assert totals == [(1, 5)]
    finally:
        database.dispose()
