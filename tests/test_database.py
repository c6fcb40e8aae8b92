"""Schema only through Alembic: migrations and models agree, upgrade and
downgrade work on SQLite and PostgreSQL, and a server refuses a database that
is behind the code, naming the command to run."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import run_cli
from dqrxfer.server.db import Base, Database, migrate
from sqlalchemy import inspect
from support.live import LiveServer


def check_round_trip(url: str) -> None:
    database = Database(url)
    try:
        migrate.upgrade(database.engine)
        assert migrate.current_revision(database.engine) == migrate.head_revision(database.engine)
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


def test_db_commands(tmp_path: Path) -> None:
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
    assert "unknown configuration key(s): datadir" in result.stderr
