"""Two sites and two revisions of one event, uploaded at the same time as
tarballs (plus a second pass into each report racing the first), on SQLite and
PostgreSQL: one event row, four report rows, every file recorded once, every
tree complete."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from dqrxfer.server.db import Event, Report, ReportFile, Upload
from support import tars
from support.live import LiveServer
from support.tus import resend_last_patch, send, tar_metadata, write_config

SITES = ("llo", "virgo")
REVISIONS = (1, 2)


def files_for(site: str, revision: int, part: str) -> dict[str, bytes]:
    return {
        f"{part}/index.html": f"<html>{site} {revision} {part}</html>".encode(),
        **{f"{part}/plot{index}.png": bytes([index]) * (1000 + index) for index in range(20)},
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{data_dir / 'dqrxfer.sqlite'}"
    return request.getfixturevalue("postgres_url")


def test_concurrent_uploads_into_one_event_give_consistent_rows(
    data_dir: Path, tmp_path: Path, database_url: str
) -> None:
    config = write_config(
        tmp_path / "server.toml", data_dir=str(data_dir), database_url=database_url
    )
    server = LiveServer(data_dir, config=config, workers=2).start()
    jobs = [
        (site, revision, part)
        for site in SITES
        for revision in REVISIONS
        for part in ("tier1", "tier2")
    ]
    try:
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(
                pool.map(
                    lambda job: send(
                        server.url,
                        tars.report_tree(files_for(*job), "gz"),
                        tar_metadata(uploader=job[0], revision=job[1]),
                        chunk_size=16 * 1024,
                    ),
                    jobs,
                )
            )
    finally:
        server.stop()
    assert [sent.final.status_code for sent in results] == [204] * len(jobs), [
        sent.final.text for sent in results if sent.final.status_code != 204
    ]

    engine = create_engine(database_url)
    with Session(engine) as session:
        assert session.scalars(select(Event.graceid)).all() == ["S230518h"]
        reports = session.execute(
            select(Report.site, Report.revision, Report.file_count, Report.total_bytes).order_by(
                Report.site, Report.revision
            )
        ).all()
        per_report = dict(
            session.execute(
                select(ReportFile.report_id, func.count()).group_by(ReportFile.report_id)
            ).all()
        )
        states = session.scalars(select(Upload.state)).all()
    engine.dispose()

    expected = []
    for site in SITES:
        for revision in REVISIONS:
            both = {**files_for(site, revision, "tier1"), **files_for(site, revision, "tier2")}
            expected.append((site, revision, len(both), sum(len(v) for v in both.values())))
            report_dir = data_dir / f"reports/O4/S230518h_dir/S230518h_{site}_{revision}"
            for name, content in both.items():
                assert (report_dir / name).read_bytes() == content
    assert [tuple(row) for row in reports] == expected
    assert sorted(per_report.values()) == [42] * 4
    assert states == ["published"] * len(jobs)


def test_concurrent_single_files_and_replacements_keep_rows_and_totals(
    data_dir: Path, tmp_path: Path, database_url: str
) -> None:
    """Small files racing into new and shared reports (the per-upload path
    that records a publication with a few prebuilt statements): every report
    row created once, a replaced file's row updated in place, the totals
    counted from the rows, and a re-sent last PATCH answered with the same URL."""
    config = write_config(
        tmp_path / "server.toml", data_dir=str(data_dir), database_url=database_url
    )
    server = LiveServer(data_dir, config=config, workers=2).start()
    first = [
        (site, revision, f"file{index}.txt")
        for site in SITES
        for revision in REVISIONS
        for index in range(4)
    ]

    def upload(job: tuple[str, int, str], content: bytes) -> tuple[int, str]:
        site, revision, name = job
        sent = send(
            server.url, content, tar_metadata(name, "file", uploader=site, revision=revision)
        )
        again = resend_last_patch(server.url, sent, len(content))
        assert again.status_code == 204, again.text
        assert again.headers["Dqr-Report-Url"] == sent.final.headers["Dqr-Report-Url"]
        return sent.final.status_code, sent.final.headers["Dqr-Report-Url"]

    try:
        with ThreadPoolExecutor(8) as pool:
            created = list(pool.map(lambda job: upload(job, b"x" * 100), first))
            # The same names again, longer: each replaces its file and row.
            replaced = list(pool.map(lambda job: upload(job, b"y" * 250), first[::2]))
    finally:
        server.stop()
    assert {status for status, _ in created + replaced} == {204}

    engine = create_engine(database_url)
    with Session(engine) as session:
        reports = session.execute(
            select(Report.site, Report.revision, Report.file_count, Report.total_bytes).order_by(
                Report.site, Report.revision
            )
        ).all()
        rows = session.execute(
            select(ReportFile.relpath, ReportFile.size).order_by(ReportFile.id)
        ).all()
        states = session.scalars(select(Upload.state)).all()
    engine.dispose()
    # Per report: four files, two of them replaced (index 0 and 2).
    assert [tuple(row) for row in reports] == [
        (site, revision, 4, 2 * 100 + 2 * 250) for site in SITES for revision in REVISIONS
    ]
    assert len(rows) == len(first)
    assert sorted(size for _, size in rows) == [100] * 8 + [250] * 8
    assert states == ["published"] * (len(first) + len(first[::2]))
    for site, revision, name in first:
        path = data_dir / f"reports/O4/S230518h_dir/S230518h_{site}_{revision}/{name}"
        expected = b"y" * 250 if name in ("file0.txt", "file2.txt") else b"x" * 100
        assert path.read_bytes() == expected
