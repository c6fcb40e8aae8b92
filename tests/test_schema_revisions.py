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


def alembic_scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(migrate.alembic_config(create_engine("sqlite://")))


def test_the_head_is_alembics() -> None:
    scripts = alembic_scripts()
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
        revisions = [
            script.revision for script in reversed(list(alembic_scripts().walk_revisions()))
        ]
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


def test_upgrade_to_head_migrates_a_database_behind_and_leaves_one_at_head(
    tmp_path: Path,
) -> None:
    """The shortcut of ``upgrade`` at head is taken only there."""
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        migrate.upgrade(database.engine, "0001")
        migrate.upgrade(database.engine)
        assert alembic_revision(database.engine) == migrate.head_revision()
        migrate.upgrade(database.engine)
        assert alembic_revision(database.engine) == migrate.head_revision()
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


def imported(*args: str) -> tuple[int, list[str], list[str]]:
    """The exit status, the UNNEEDED modules imported, the lines printed."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORTED, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    *printed, last = result.stdout.splitlines()
    status, modules = json.loads(last)
    return status, modules, printed


@pytest.fixture(scope="module")
def up_to_date(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("data")
    status, modules, printed = imported("db", "upgrade", "--data-dir", str(data))
    assert status == 0 and "alembic" in modules, "a new database is migrated by Alembic"
    assert printed == [f"database at revision {alembic_scripts().get_current_head()}"]
    return data


#: Each command with its exit status and what it prints, {head} being
#: Alembic's head (None: not checked here; "no reports" and "no such event"
#: go to stderr).
WITHOUT_MIGRATION: list[tuple[list[str], int, list[str] | None]] = [
    (["reports", "list"], 0, []),
    (["reports", "show", "S230518h"], 1, []),
    (["reindex", "--dry-run"], 0, None),
    (["cleanup", "--dry-run"], 0, None),
    (["cleanup"], 0, None),
    (["db", "current"], 0, ["{head} (up to date)"]),
    (["db", "upgrade"], 0, ["database at revision {head}"]),
    (["open_database"], 0, []),
]


@pytest.mark.parametrize(
    ("command", "expected", "output"),
    [pytest.param(*case, id=" ".join(case[0])) for case in WITHOUT_MIGRATION],
)
def test_commands_that_migrate_nothing_import_no_alembic_nor_flask(
    up_to_date: Path, command: list[str], expected: int, output: list[str] | None
) -> None:
    status, modules, printed = imported(*command, "--data-dir", str(up_to_date))
    assert status == expected
    if output is not None:
        head = alembic_scripts().get_current_head()
        assert printed == [line.format(head=head) for line in output]
    assert modules == [], f"{' '.join(command)} imported {modules}"
