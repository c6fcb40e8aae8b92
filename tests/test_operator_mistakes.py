"""``dqrxfer-server`` given an operator's usual mistakes: a mistyped
``--data-dir`` or ``--config`` (no database there), a PostgreSQL server that
does not answer.  Each gets one line and an exit status, and nothing is
created on the way.

Each command runs as a real process, except where a test runs every command
in turn: there ``main`` runs in the test's process (``run_in_process``, held
to what the process gives by ``tests/test_cli_in_process.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support.cli import run_cli, run_in_process
from support.live import free_port

HINT = "(wrong --data-dir or --config? 'dqrxfer-server db upgrade' creates one)"

#: Commands that need an existing database: those that only read it, and
#: those that write to an existing one.  Only ``db upgrade``, ``db restore``
#: and ``serve`` with ``auto_upgrade`` may make a database.
NEEDS_A_DATABASE = [
    ("db", "current"),
    ("db", "downgrade", "0001"),
    ("reports", "list"),
    ("reports", "list", "--json"),
    ("reports", "show", "S230518h"),
    ("reports", "show", "S230518h_llo_1"),
    ("reindex", "--dry-run"),
    ("reindex",),
    ("cleanup", "--dry-run"),
    ("cleanup",),
]


def files_under(path: Path) -> list[str]:
    return sorted(str(entry.relative_to(path)) for entry in path.rglob("*"))


@pytest.mark.parametrize("command", NEEDS_A_DATABASE, ids=" ".join)
def test_a_mistyped_data_dir_is_named_and_not_created(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    mistyped = tmp_path / "srv" / "dqrxfre"

    result = run_in_process("dqrxfer-server", *command, "--data-dir", str(mistyped))

    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"dqrxfer-server: no database at {mistyped / 'dqrxfer.sqlite'} {HINT}\n"
    )
    assert result.stdout == ""
    assert not (tmp_path / "srv").exists()


def test_a_data_dir_without_a_database_stays_as_it_was(tmp_path: Path) -> None:
    """The directory exists (the config names it) but holds no database yet:
    no empty database file, no uploads or reports directories appear."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("kept")
    config = tmp_path / "server.toml"
    config.write_text(f'data_dir = "{data}"\n')
    for command in NEEDS_A_DATABASE:
        result = run_in_process("dqrxfer-server", *command, "--config", str(config))
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr == f"dqrxfer-server: no database at {data / 'dqrxfer.sqlite'} {HINT}\n"
        assert files_under(data) == ["notes.txt"], command


def test_backup_and_register_on_a_missing_database_create_nothing(tmp_path: Path) -> None:
    mistyped = tmp_path / "dqrxfre"
    source = tmp_path / "made-at-cit"
    source.mkdir()
    (source / "index.html").write_text("<html>cit</html>")
    backups = tmp_path / "backups"

    backup = run_cli(
        "dqrxfer-server", "db", "backup", str(backups / "b.db"), "--data-dir", str(mistyped)
    )
    register = run_cli(
        "dqrxfer-server",
        "reports",
        "register",
        *("--project", "O4", "--graceid", "S230518h", "--site", "llo", "--revision", "1"),
        *("--path", str(source), "--data-dir", str(mistyped)),
    )

    for result in (backup, register):
        assert result.returncode == 2, result.stderr
        assert result.stderr == (
            f"dqrxfer-server: no database at {mistyped / 'dqrxfer.sqlite'} {HINT}\n"
        )
    assert not mistyped.exists() and not backups.exists()
    assert files_under(source) == ["index.html"]


def test_db_history_needs_no_database(tmp_path: Path) -> None:
    """The revisions are the code's: listed without opening (or making) a database."""
    mistyped = tmp_path / "dqrxfre"
    result = run_cli("dqrxfer-server", "db", "history", "--data-dir", str(mistyped))
    assert result.returncode == 0, result.stderr
    assert "<base> -> 0001" in result.stdout and result.stderr == ""
    assert not mistyped.exists()


def test_an_unreachable_postgresql_server_is_one_line(tmp_path: Path) -> None:
    """Nothing listens on the port: each command says so in one line, exit 1,
    without the password, and leaves the data directory as it was."""
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "server.toml"
    config.write_text(
        f'data_dir = "{data}"\n'
        f'database_url = "postgresql+psycopg://dqrxfer:s3cret@127.0.0.1:{port}/dqrxfer"\n'
    )
    for command in NEEDS_A_DATABASE:
        result = run_in_process("dqrxfer-server", *command, "--config", str(config))
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr.startswith(
            "dqrxfer-server: cannot use the database (database_url): "
        ), (command, result.stderr)
        assert f'"127.0.0.1", port {port} failed: Connection refused' in result.stderr
        assert result.stderr.count("\n") == 1, (command, result.stderr)
        assert "s3cret" not in result.stderr and result.stdout == ""
        assert files_under(data) == [], command


def test_cleanup_names_a_missing_data_directory_of_a_postgresql_setup(tmp_path: Path) -> None:
    """With PostgreSQL the data directory is not where the database lives, so
    ``cleanup`` checks it by itself (before it would connect)."""
    mistyped = tmp_path / "dqrxfre"
    config = tmp_path / "server.toml"
    config.write_text(
        f'data_dir = "{mistyped}"\n'
        f'database_url = "postgresql+psycopg://dqrxfer@127.0.0.1:{free_port()}/dqrxfer"\n'
    )
    for command in (("cleanup",), ("cleanup", "--dry-run")):
        result = run_cli("dqrxfer-server", *command, "--config", str(config))
        assert result.returncode == 2, result.stderr
        assert result.stderr == (
            f"dqrxfer-server: no data directory at {mistyped} (wrong --data-dir or --config?)\n"
        )
        assert not mistyped.exists()


def test_alembic_speaks_only_with_verbose(tmp_path: Path) -> None:
    """Alembic's INFO lines (it runs where the schema changes; the commands
    that only read the revision do without it) are for ``-v`` only."""
    data = tmp_path / "data"
    for revision in ("0002", "head"):
        upgrade = run_cli("dqrxfer-server", "db", "upgrade", revision, "--data-dir", str(data))
        assert upgrade.returncode == 0, upgrade.stderr
        assert upgrade.stdout.startswith("database at revision ") and upgrade.stderr == ""
    for command in (("db", "current"), ("reports", "list"), ("cleanup", "--dry-run")):
        quiet = run_cli("dqrxfer-server", *command, "--data-dir", str(data))
        assert quiet.returncode == 0, quiet.stderr
        assert "alembic" not in quiet.stderr, (command, quiet.stderr)
    verbose = run_cli("dqrxfer-server", "-v", "db", "downgrade", "0002", "--data-dir", str(data))
    assert verbose.returncode == 0 and verbose.stdout == "database at revision 0002\n"
    assert "INFO:alembic.runtime.migration:Context impl SQLiteImpl." in verbose.stderr


def test_a_dry_run_does_not_upgrade_the_schema(tmp_path: Path) -> None:
    """The embedded default upgrades the schema when the server starts; a
    read-only command on a database behind the code says so instead."""
    data = tmp_path / "data"
    older = run_cli("dqrxfer-server", "db", "upgrade", "0002", "--data-dir", str(data))
    assert older.returncode == 0, older.stderr
    for command in (("cleanup", "--dry-run"), ("reports", "list"), ("reindex", "--dry-run")):
        result = run_cli("dqrxfer-server", *command, "--data-dir", str(data))
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr.startswith(
            "dqrxfer-server: database schema is at revision 0002, this code needs "
        )
        assert "run 'dqrxfer-server db upgrade'" in result.stderr
    current = run_cli("dqrxfer-server", "db", "current", "--data-dir", str(data))
    assert current.stdout.startswith("0002 (behind (head is "), current.stdout


def test_serve_without_auto_upgrade_names_a_missing_database(tmp_path: Path) -> None:
    """With a config file (no ``auto_upgrade``) ``serve`` would make an empty
    database only to refuse it as behind the code: it names the missing one
    instead, and makes nothing."""
    mistyped = tmp_path / "dqrxfre"
    config = tmp_path / "server.toml"
    config.write_text(f'data_dir = "{mistyped}"\n')
    command = ["serve", "--port", str(free_port()), "--config", str(config)]
    result = run_cli("dqrxfer-server", *command, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"dqrxfer-server: no database at {mistyped / 'dqrxfer.sqlite'} {HINT}\n"
    assert not mistyped.exists()


def test_the_operator_commands_load_neither_flask_nor_the_request_handlers() -> None:
    """``dqrxfer-server db``, ``reports``, ``cleanup``: each is a process of its
    own, and the web stack would be a third of its start (``dqrxfer.server.lazy``)."""
    probe = (
        "import sys; from dqrxfer.server import cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug') "
        "or m.startswith(('dqrxfer.server.api', 'dqrxfer.server.tus.blueprint'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == "[]\n", result.stdout
