"""Schema only through Alembic: migrations and models agree, upgrade and
downgrade work on SQLite and PostgreSQL, and a server refuses a database that
is behind the code, naming the command to run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from dqrxfer.server.db import Base, Database, migrate
from support.cli import run_cli
from support.live import LiveServer


def check_round_trip(url: str) -> None:
    database = Database(url)
    try:
        migrate.upgrade(database.engine)
        assert migrate.current_revision(database.engine) == migrate.head_revision()
        with database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        migrate.downgrade(database.engine, "base")
        assert migrate.current_revision(database.engine) is None
        assert set(inspect(database.engine).get_table_names()) <= {"alembic_version"}
    finally:
        database.dispose()


def test_migrations_match_models_sqlite(tmp_path: Path) -> None:
    check_round_trip(f"sqlite:///{tmp_path / 'db.sqlite'}")


@pytest.mark.postgres
def test_migrations_match_models_postgres(postgres_url: str) -> None:
    check_round_trip(postgres_url)


def revisions_in_order(database: Database) -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config(database.engine))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def seed(engine) -> None:  # type: ignore[no-untyped-def]
    """Rows that every revision must carry through (inserted at the first revision)."""
    now = datetime(2026, 11, 27, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO events (id, graceid, created) VALUES (1, 'S230518h', :now)"),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO reports (id, event_id, project, site, revision, path, url, created,"
                " updated, file_count, total_bytes) VALUES (1, 1, 'O4', 'llo', 1,"
                " 'S230518h_dir/S230518h_llo_1', '/r/', :now, :now, 1, 5)"
            ),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO report_files (report_id, relpath, size, published)"
                " VALUES (1, 'index.html', 5, :now)"
            ),
            {"now": now},
        )
        connection.execute(
            text("INSERT INTO uploads (id, state, created) VALUES ('ab12', 'published', :now)"),
            {"now": now},
        )


def carried(engine) -> list[tuple]:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                text(
                    "SELECT e.graceid, r.site, r.revision, f.relpath, u.state FROM events e"
                    " JOIN reports r ON r.event_id = e.id JOIN report_files f"
                    " ON f.report_id = r.id, uploads u"
                )
            )
        ]


def check_every_step(url: str) -> None:
    """Upgrade one revision at a time with data in the tables, then back down:
    every step runs, and the rows survive every step but the last downgrade."""
    database = Database(url)
    try:
        revisions = revisions_in_order(database)
        assert revisions[0] == "0001" and len(revisions) >= 2
        expected = [("S230518h", "llo", 1, "index.html", "published")]
        for position, revision in enumerate(revisions):
            migrate.upgrade(database.engine, revision)
            assert migrate.current_revision(database.engine) == revision
            if position == 0:
                seed(database.engine)
            assert carried(database.engine) == expected
        for revision in reversed(revisions[:-1]):
            migrate.downgrade(database.engine, revision)
            assert migrate.current_revision(database.engine) == revision
            assert carried(database.engine) == expected
        migrate.downgrade(database.engine, "base")
        assert set(inspect(database.engine).get_table_names()) <= {"alembic_version"}
    finally:
        database.dispose()


def test_every_revision_step_sqlite(tmp_path: Path) -> None:
    check_every_step(f"sqlite:///{tmp_path / 'db.sqlite'}")


@pytest.mark.postgres
def test_every_revision_step_postgres(postgres_url: str) -> None:
    check_every_step(postgres_url)


def test_lookups_by_graceid_and_time_are_indexed(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        migrate.upgrade(database.engine)
        inspector = inspect(database.engine)
        indexed = {
            table: {tuple(index["column_names"]) for index in inspector.get_indexes(table)}
            | {tuple(unique["column_names"]) for unique in inspector.get_unique_constraints(table)}
            for table in ("events", "reports", "report_files", "uploads")
        }
    finally:
        database.dispose()
    assert {("graceid",), ("created",)} <= indexed["events"]
    assert {("event_id",), ("updated", "id")} <= indexed["reports"]
    assert {("report_id",), ("upload_id",), ("report_id", "relpath")} <= indexed["report_files"]
    assert {("graceid",), ("created",), ("state",)} <= indexed["uploads"]


def test_db_commands(tmp_path: Path) -> None:
    Database(f"sqlite:///{tmp_path / 'dqrxfer.sqlite'}").dispose()  # an empty database
    result = run_cli("dqrxfer-server", "db", "current", "--data-dir", str(tmp_path))
    assert result.returncode == 0 and "<empty> (behind" in result.stdout
    result = run_cli("dqrxfer-server", "db", "upgrade", "--data-dir", str(tmp_path))
    assert result.returncode == 0 and "database at revision" in result.stdout
    result = run_cli("dqrxfer-server", "db", "current", "--data-dir", str(tmp_path))
    assert "(up to date)" in result.stdout
    result = run_cli("dqrxfer-server", "db", "history", "--data-dir", str(tmp_path))
    assert "<base> -> 0001" in result.stdout


def test_server_refuses_a_database_behind_the_code(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    older = run_cli("dqrxfer-server", "db", "upgrade", "0002", "--config", str(config))
    assert older.returncode == 0, older.stderr
    server = LiveServer(tmp_path / "data", config=config)
    with pytest.raises(RuntimeError) as raised:
        server.start()
    assert "run 'dqrxfer-server db upgrade'" in str(raised.value)
    assert server.process is not None and server.process.returncode == 1


def test_bad_config_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('datadir = "x"\n')
    result = run_cli("dqrxfer-server", "db", "current", "--config", str(config))
    assert result.returncode == 2
    assert "datadir: unknown key; did you mean data_dir?" in result.stderr
