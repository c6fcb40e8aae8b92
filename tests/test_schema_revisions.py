"""The schema revisions read without Alembic (server/db/migrate.py) are
Alembic's: the code's head as its ``ScriptDirectory`` finds it, the
database's revision as its ``MigrationContext`` reads it, on SQLite and
PostgreSQL, for an empty database, one behind the code, one at head and one
whose history branched; and the commands that migrate nothing import no
Alembic (nor Flask: they serve no requests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text

from dqrxfer.server.db import Database, migrate


def alembic_heads(engine: Engine) -> tuple[str, ...]:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_heads()


def alembic_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_the_head_is_alembics() -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config(create_engine("sqlite://")))
    assert migrate.head_revisions() == tuple(scripts.get_heads())
    assert migrate.head_revision() == scripts.get_current_head()
    assert migrate.head_revision() is not None


def check_current_revisions(url: str) -> None:
    """At every revision from none to head, and at two revisions at once."""
    database = Database(url)
    engine = database.engine
    try:
        assert migrate.current_revisions(engine) == alembic_heads(engine) == ()
        assert migrate.current_revision(engine) is alembic_revision(engine) is None
        with pytest.raises(migrate.SchemaOutOfDate, match=r"at revision <empty>, this code"):
            migrate.check_up_to_date(engine)
        scripts = ScriptDirectory.from_config(migrate.alembic_config(engine))
        revisions = [script.revision for script in reversed(list(scripts.walk_revisions()))]
        assert len(revisions) >= 2 and revisions[-1] == migrate.head_revision()
        for revision in revisions:
            migrate.upgrade(engine, revision)
            assert migrate.current_revisions(engine) == alembic_heads(engine) == (revision,)
            assert migrate.current_revision(engine) == alembic_revision(engine) == revision
            if revision != revisions[-1]:
                with pytest.raises(migrate.SchemaOutOfDate, match=f"at revision {revision}, "):
                    migrate.check_up_to_date(engine)
        migrate.check_up_to_date(engine)
        # Two rows, as a history that branched leaves: at no head.
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO alembic_version VALUES ('0001')"))
        assert sorted(migrate.current_revisions(engine)) == sorted(alembic_heads(engine))
        assert len(migrate.current_revisions(engine)) == 2
        with pytest.raises(migrate.SchemaOutOfDate, match="this code needs"):
            migrate.check_up_to_date(engine)
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM alembic_version WHERE version_num = '0001'"))
        # Downgraded to base: the version table stays, without a row.
        migrate.downgrade(engine, "base")
        assert migrate.current_revisions(engine) == alembic_heads(engine) == ()
    finally:
        database.dispose()


def test_current_revisions_are_alembics_sqlite(tmp_path: Path) -> None:
    check_current_revisions(f"sqlite:///{tmp_path / 'db.sqlite'}")


@pytest.mark.postgres
def test_current_revisions_are_alembics_postgres(postgres_url: str) -> None:
    check_current_revisions(postgres_url)


def test_upgrade_at_head_runs_no_migration(tmp_path: Path) -> None:
    """``upgrade`` to head on a database there already answers without
    Alembic; to head from behind, it migrates."""
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        migrate.upgrade(database.engine, "0001")
        migrate.upgrade(database.engine)
        assert migrate.current_revision(database.engine) == migrate.head_revision()
    finally:
        database.dispose()


#: The packages that a command which migrates nothing and serves no request
#: has no use for.
UNNEEDED = ("alembic", "flask", "werkzeug", "jinja2")

#: Runs ``dqrxfer-server`` (or, with "open_database", serve's schema check
#: with auto_upgrade) and prints its status and the UNNEEDED modules imported.
IMPORTED = f"""
import json, sys
if sys.argv[1] == "open_database":
    from dqrxfer.server.config import load_settings
    from dqrxfer.server.services import open_database
    settings = load_settings(None, sys.argv[-1])
    assert settings.auto_upgrade
    open_database(settings).dispose()
    status = 0
else:
    from dqrxfer.server.cli import main
    status = main(sys.argv[1:])
print(json.dumps([status, sorted(m for m in sys.modules if m.split(".")[0] in {UNNEEDED!r})]))
"""


def imported(*args: str) -> tuple[int, list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTED, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    status, modules = json.loads(result.stdout.splitlines()[-1])
    return status, modules


@pytest.fixture(scope="module")
def up_to_date(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("data")
    status, modules = imported("db", "upgrade", "--data-dir", str(data))
    assert status == 0 and "alembic" in modules, "a new database is migrated by Alembic"
    return data


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["reports", "list"], 0),
        (["reports", "show", "S230518h"], 1),  # no such event: said, exit 1
        (["reindex", "--dry-run"], 0),
        (["cleanup", "--dry-run"], 0),
        (["cleanup"], 0),
        (["db", "current"], 0),
        (["db", "upgrade"], 0),
        (["open_database"], 0),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else str(value),
)
def test_commands_that_migrate_nothing_import_no_alembic_nor_flask(
    up_to_date: Path, command: list[str], expected: int
) -> None:
    status, modules = imported(*command, "--data-dir", str(up_to_date))
    assert status == expected
    assert modules == [], f"{' '.join(command)} imported {modules}"
