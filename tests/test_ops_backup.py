"""The operators' backup / restore / upgrade procedure, with the real commands
against real servers and databases (SQLite, and PostgreSQL when reachable)."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from support.cli import run_cli
from support.live import LiveServer


def upload(server: LiveServer, path: Path, site: str, revision: str = "1") -> None:
    result = run_cli(
        "dqr-upload",
        "-s",
        server.url,
        "--project",
        "O4",
        "--graceid",
        "S230518h",
        "--uploader",
        site,
        "--revision",
        revision,
        str(path),
    )
    assert result.returncode == 0, result.stderr


def sites(server: LiveServer) -> list[str]:
    response = requests.get(f"{server.url}/api/v1/events/S230518h/reports", timeout=30)
    assert response.status_code == 200, response.text
    return [report["site"] for report in response.json()["reports"]]


def test_sqlite_online_backup_then_restore(data_dir: Path, tmp_path: Path) -> None:
    payload = tmp_path / "index.html"
    payload.write_text("<html>report</html>")
    backup_file = tmp_path / "backups" / "dqrxfer.sqlite"
    server = LiveServer(data_dir).start()
    try:
        upload(server, payload, "llo")
        # Online: the server keeps running (and holding the WAL) during the backup.
        result = run_cli(
            "dqrxfer-server", "db", "backup", "--data-dir", str(data_dir), str(backup_file)
        )
        assert result.returncode == 0, result.stderr
        upload(server, payload, "virgo")
        assert sites(server) == ["llo", "virgo"]
    finally:
        server.stop()

    assert [p.name for p in backup_file.parent.iterdir()] == ["dqrxfer.sqlite"]  # no temp left
    with sqlite3.connect(backup_file) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert check.execute("SELECT site FROM reports").fetchall() == [("llo",)]
    check.close()

    result = run_cli(
        "dqrxfer-server", "db", "restore", "--data-dir", str(data_dir), str(backup_file)
    )
    assert result.returncode == 0, result.stderr
    server = LiveServer(data_dir).start()
    try:
        assert sites(server) == ["llo"]
    finally:
        server.discard()


def test_restore_refuses_a_file_that_is_not_a_backup(data_dir: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_bytes(b"this is not a database" * 100)
    result = run_cli("dqrxfer-server", "db", "restore", "--data-dir", str(data_dir), str(bogus))
    assert result.returncode == 1
    assert "is not an SQLite database" in result.stderr
    missing = run_cli("dqrxfer-server", "db", "backup", "--data-dir", str(data_dir), str(bogus))
    assert missing.returncode == 2
    assert f"no database at {data_dir / 'dqrxfer.sqlite'} (wrong --data-dir" in missing.stderr


def write_config(path: Path, data_dir: Path, database_url: str) -> Path:
    path.write_text(f'data_dir = "{data_dir}"\ndatabase_url = "{database_url}"\n')
    return path


def test_upgrade_procedure_stop_backup_upgrade_start(data_dir: Path, tmp_path: Path) -> None:
    """With a config file the server refuses a database behind the code and
    names the command; the documented procedure brings it up."""
    config = write_config(tmp_path / "server.toml", data_dir, f"sqlite:///{data_dir}/db.sqlite")
    refused = LiveServer(data_dir, config=config)
    with pytest.raises(RuntimeError, match="dqrxfer-server db upgrade"):
        refused.start()

    backup_file = tmp_path / "before-upgrade.sqlite"
    sqlite3.connect(data_dir / "db.sqlite").close()
    steps = [
        ("db", "backup", "--config", str(config), str(backup_file)),
        ("db", "upgrade", "--config", str(config)),
        ("db", "current", "--config", str(config)),
    ]
    outputs = []
    for step in steps:
        result = run_cli("dqrxfer-server", *step)
        assert result.returncode == 0, (step, result.stderr)
        outputs.append(result.stdout)
    assert "(up to date)" in outputs[-1]
    server = LiveServer(data_dir, config=config).start()
    try:
        assert sites(server) == []
    finally:
        server.discard()


@pytest.mark.postgres
def test_postgresql_backup_restored_into_a_scratch_database(
    postgres_url: str, data_dir: Path, tmp_path: Path
) -> None:
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("PostgreSQL client programs not installed")
    schema = make_url(postgres_url).query["options"].split("=", 1)[1]
    config = write_config(tmp_path / "server.toml", data_dir, postgres_url)
    assert run_cli("dqrxfer-server", "db", "upgrade", "--config", str(config)).returncode == 0
    payload = tmp_path / "index.html"
    payload.write_text("<html>report</html>")
    server = LiveServer(data_dir, config=config).start()
    try:
        upload(server, payload, "lho")
    finally:
        server.stop()
    dump = tmp_path / "dqrxfer.dump"
    result = run_cli(
        "dqrxfer-server",
        "db",
        "backup",
        "--config",
        str(config),
        str(dump),
        "--",
        f"--schema={schema}",
    )
    assert result.returncode == 0, result.stderr

    scratch = f"restore_{uuid.uuid4().hex[:12]}"
    base = make_url(postgres_url)
    admin = create_engine(base.set(query={}), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{scratch}"'))
    try:
        scratch_url = base.set(database=scratch).render_as_string(hide_password=False)
        restored = write_config(tmp_path / "restored.toml", data_dir, scratch_url)
        result = run_cli("dqrxfer-server", "db", "restore", "--config", str(restored), str(dump))
        assert result.returncode == 0, result.stderr
        current = run_cli("dqrxfer-server", "db", "current", "--config", str(restored))
        assert "(up to date)" in current.stdout, current.stderr
        server = LiveServer(data_dir, config=restored).start()
        try:
            assert sites(server) == ["lho"]
        finally:
            server.stop()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        admin.dispose()
