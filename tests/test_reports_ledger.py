"""The operator commands record reports through the ledger, the one writer of
report rows, inside their own session's transaction: on SQLite and on
PostgreSQL (where a row found missing is inserted in a savepoint)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dqrxfer.server.config import load_settings
from dqrxfer.server.reports import admin
from dqrxfer.server.services import open_database
from support.tus import write_config

DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
REPORT = "S230518h_dir/S230518h_llo_1"


@pytest.mark.parametrize("backend", DATABASES)
def test_reindex_and_register_in_place_write_through_the_ledger(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, data_dir: Path
) -> None:
    keys: dict[str, object] = {}
    if backend == "postgresql":
        keys["database_url"] = request.getfixturevalue("postgres_url")
    config = write_config(tmp_path / "config.toml", **keys)
    settings = load_settings(config, data_dir)
    project = settings.projects["O4"]
    report = project.reports_root / REPORT
    (report / "tier1").mkdir(parents=True)
    (report / "index.html").write_bytes(b"<html>llo</html>")
    (report / "tier1/data.json").write_bytes(b"{}")
    old = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    for path in (report / "index.html", report / "tier1/data.json"):
        os.utime(path, (old, old))
    database = open_database(settings)
    try:
        summary = admin.reindex(settings, database)
        assert (summary.new, summary.updated, summary.hashed) == (1, 0, 2)
        with database.session() as session:
            found = admin.find_report(session, "S230518h", "O4", "llo", 1)
            assert found is not None
            assert (found.file_count, found.total_bytes) == (2, 18)
            # Adopted: as old as its newest file, not as the indexing.
            assert admin.as_utc(found.created).timestamp() == old
            assert admin.as_utc(found.updated).timestamp() == old

        (report / "tier1/data.json").unlink()
        (report / "new.txt").write_bytes(b"12345")
        (report / "tier1/more.txt").write_bytes(b"678")
        registered = admin.register(
            settings, database, "O4", "S230518h", "llo", 1, report, subdir=""
        )
        assert registered.in_place and registered.files == 3
        with database.session() as session:
            found = admin.find_report(session, "S230518h", "O4", "llo", 1)
            assert found is not None
            relpaths = sorted(row.relpath for row in found.files)
            assert relpaths == ["index.html", "new.txt", "tier1/more.txt"]
            assert found.total_bytes == 16 + 5 + 3
            assert admin.as_utc(found.updated).timestamp() > old
    finally:
        database.dispose()
