"""Crash recovery: a server killed with SIGKILL in the middle of finalizing an
archive (between extraction and publication, or between publication and the
database) is restarted, and its start-up recovery publishes the upload exactly
once.  The crash point is the test-only fault point DQRXFER_TEST_FAULT."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from dqrxfer.server.db import Report, ReportFile, Upload
from support import tars
from support.live import LiveServer
from support.tus import create_upload, patch_in_background, tar_metadata, wait_for

FILES = {"index.html": "<html>report</html>", "tier1/data.json": '{"a": 1}', "tier2/b.txt": "b"}
REPORT = Path("reports/O4/S230518h_dir/S230518h_llo_1")


def database_rows(data_dir: Path) -> tuple[list, list, list]:
    engine = create_engine(f"sqlite:///{data_dir / 'dqrxfer.sqlite'}")
    with Session(engine) as session:
        reports = [(r.site, r.revision, r.file_count) for r in session.scalars(select(Report))]
        files = sorted(f.relpath for f in session.scalars(select(ReportFile)))
        uploads = [(u.id, u.state) for u in session.scalars(select(Upload))]
    engine.dispose()
    return reports, files, uploads


@pytest.mark.parametrize("point", ["after-extract", "after-publish"])
def test_kill_9_while_finalizing_then_restart_publishes_exactly_once(
    data_dir: Path, tmp_path: Path, point: str
) -> None:
    marker = tmp_path / "reached"
    payload = tars.report_tree(FILES, "gz")
    crashing = LiveServer(data_dir, env={"DQRXFER_TEST_FAULT": f"{point}:{marker}"}).start()
    try:
        url = create_upload(crashing.url, len(payload), tar_metadata())
        upload_id = url.rsplit("/", 1)[-1]
        patcher = patch_in_background(url, payload)
        wait_for(marker.exists, timeout=120, what=f"the fault point {point}")
    finally:
        crashing.stop(signal.SIGKILL)
    patcher.join(timeout=60)

    report_dir = data_dir / REPORT
    work = data_dir / "reports/O4/.dqrxfer-staging/work"
    if point == "after-extract":
        assert not report_dir.exists()
        assert any(work.iterdir()), "the dead finalization left its staging directory"
    else:
        assert (report_dir / "tier1/data.json").exists()
    assert database_rows(data_dir) == ([], [], [(upload_id, "receiving")])

    restarted = LiveServer(data_dir, workers=2).start()
    try:

        def published() -> bool:
            record = requests.get(f"{restarted.url}/api/v1/uploads/{upload_id}", timeout=10)
            return record.json()["state"] == "published"

        wait_for(published, timeout=120, interval=0.1, what="recovery to publish the upload")
        landed = {p.relative_to(report_dir).as_posix() for p in report_dir.rglob("*.*")}
        assert landed == set(FILES)
        assert (report_dir / "tier1/data.json").read_text() == FILES["tier1/data.json"]
        assert database_rows(data_dir) == (
            [("llo", 1, 3)],
            sorted(FILES),
            [(upload_id, "published")],
        )
        assert list(work.iterdir()) == []
        wait_for(
            lambda: f"published upload {upload_id}" in restarted.log(),
            timeout=30,
            what="the publication in the log",
        )
        assert restarted.log().count(f"published upload {upload_id}") == 1
    finally:
        restarted.discard()
