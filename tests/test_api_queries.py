"""The links lookup is one indexed query whatever the number of reports (no
N+1), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, text

from dqrxfer.server.api import queries
from dqrxfer.server.app import create_app
from dqrxfer.server.config import load_settings
from dqrxfer.server.db import Database, migrate
from dqrxfer.server.services import services
from support.seed import Seed, seed

SITES = ("llo", "lho", "virgo", "kagra")
ROWS = [
    *[Seed("S230518h", SITES[i % 4], i // 4, minutes=i) for i in range(24)],
    *[Seed(f"G{20000 + i}", "llo", 1, minutes=i) for i in range(20)],
]


def count_selects(database_url: str, data_dir: Path, path: str) -> tuple[int, dict]:
    settings = dataclasses.replace(load_settings(None, data_dir), database_url=database_url)
    app = create_app(settings)
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    # Every engine: the links lookup has its own on PostgreSQL.
    event.listen(Engine, "before_cursor_execute", record)
    try:
        response = app.test_client().get(path)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
        services(app).close()
        reader = app.extensions.get("dqrxfer.api.reader")
        if reader is not None:
            reader.dispose()
    assert response.status_code == 200, response.get_data(as_text=True)
    return len(statements), response.get_json()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_one_query_per_lookup_and_two_per_event_page(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'db.sqlite'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    database = Database(url)
    migrate.upgrade(database.engine)
    database.dispose()
    seed(url, ROWS)

    count, body = count_selects(url, tmp_path, "/api/v1/events/S230518h/reports")
    assert count == 1 and len(body["reports"]) == 24
    count, body = count_selects(url, tmp_path, "/api/v1/events/S230518h/reports?latest=1")
    assert count == 1 and [(r["site"], r["revision"]) for r in body["reports"]] == [
        ("kagra", 5),
        ("lho", 5),
        ("llo", 5),
        ("virgo", 5),
    ]
    count, body = count_selects(url, tmp_path, "/api/v1/reports?limit=30")
    assert count == 1 and len(body["reports"]) == 30
    count, body = count_selects(url, tmp_path, "/api/v1/events?limit=21")
    assert count == 2 and body["events"][-1]["report_count"] == 24


def test_sqlite_lookup_uses_indexes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    database = Database(url)
    migrate.upgrade(database.engine)
    seed(url, ROWS)
    with database.session() as session:
        compiled = queries.event_reports_query("S230518h", site="llo").compile(
            database.engine, compile_kwargs={"literal_binds": True}
        )
        plan = " / ".join(
            row[-1] for row in session.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
        )
    database.dispose()
    assert "SEARCH events USING" in plan and "INDEX" in plan, plan
    assert "SEARCH reports USING INDEX ix_reports_event_id" in plan, plan
    assert "SCAN reports" not in plan, plan
