"""The operator commands record reports through the ledger, the one writer of
report rows, inside their own session's transaction: on SQLite and on
PostgreSQL (where a row found missing is inserted in a savepoint)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from dqrxfer.server.config import load_settings
from dqrxfer.server.reports import admin, ledger
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


@pytest.mark.parametrize("backend", DATABASES)
def test_an_upload_moves_the_totals_by_what_it_changed_without_counting_every_row(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A report grown file by file is not read whole at each upload: counting
    its rows again took 1.4 ms at 10,000 files, under the write lock.  The
    totals still equal those of its rows after files are added, replaced by
    larger and smaller ones, and removed (a link taking a file's place)."""
    keys: dict[str, object] = {}
    if backend == "postgresql":
        keys["database_url"] = request.getfixturevalue("postgres_url")
    config = write_config(tmp_path / "config.toml", **keys)
    settings = load_settings(config, data_dir)
    database = open_database(settings)

    def publish(files: dict[str, int], removed: tuple[str, ...] = ()) -> None:
        change = ledger.ReportChange(
            graceid="S230518h",
            project="O4",
            site="llo",
            revision=1,
            path=REPORT,
            url="/reports/O4/" + REPORT + "/",
            files=[ledger.PublishedFile(path, size, None) for path, size in files.items()],
            removed=list(removed),
            upload_id=None,
            principal="someone",
            when=datetime.now(UTC),
        )
        with database.transaction(write=True) as connection:
            ledger.record_report(connection, change, recount=False)

    def totals() -> tuple[tuple[int, int], tuple[int, int]]:
        with database.transaction() as connection:
            stored = connection.execute(text("SELECT file_count, total_bytes FROM reports")).one()
            counted = connection.execute(
                text("SELECT count(*), coalesce(sum(size), 0) FROM report_files")
            ).one()
        return tuple(stored), tuple(counted)  # type: ignore[return-value]

    try:
        publish({"a": 10, "b": 20})  # the report is made with its totals
        monkeypatch.setattr(ledger, "_FAST_REFRESH_TOTALS", None)  # no recount from here on
        publish({"c": 5})
        publish({"a": 100})
        publish({"b": 1, "d/e": 7})
        publish({}, removed=("c", "missing"))
        publish({f"many/{n}": n for n in range(600)}, removed=("a",))  # past one IN list
        stored, counted = totals()
        assert stored == counted == (602, 1 + 7 + sum(range(600)))  # b, d/e and many/*
    finally:
        database.dispose()
