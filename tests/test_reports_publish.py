"""Publishing reports through the app (in process, support.inprocess): tarballs (every compression),
several passes into one report, idempotent finalization, whole-payload
verification, and the database rows that follow the tree."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from dqrxfer.server.config import load_settings
from dqrxfer.server.db import Database, Event, Report, ReportFile, Upload
from dqrxfer.server.reports.finalize import finalize_upload
from dqrxfer.server.tus.store import FileStore
from support import tars
from support.inprocess import InProcessServer, in_process_server
from support.tars import file, symlink
from support.tus import (
    report_metadata,
    resend_last_patch,
    send,
    sha256_hex,
    tar_metadata,
    write_config,
)

REPORT = Path("reports/O4/S230518h_dir/S230518h_llo_1")


def tree_of(directory: Path) -> dict[str, bytes | str]:
    """Files (content) and links (``-> target``) under ``directory``."""
    found: dict[str, bytes | str] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_symlink():
            found[rel] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[rel] = path.read_bytes()
    return found


def db_state(data_dir: Path) -> dict[str, object]:
    engine = create_engine(f"sqlite:///{data_dir / 'dqrxfer.sqlite'}")
    with Session(engine) as session:
        reports = session.scalars(select(Report).order_by(Report.id)).all()
        state = {
            "events": [e.graceid for e in session.scalars(select(Event))],
            "reports": [(r.site, r.revision, r.path, r.file_count, r.total_bytes) for r in reports],
            "files": {
                f.relpath: (f.size, f.sha256, f.upload_id)
                for f in session.scalars(select(ReportFile).order_by(ReportFile.relpath))
            },
            "uploads": {u.id: u.state for u in session.scalars(select(Upload))},
        }
    engine.dispose()
    return state


def digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz"])
def test_tarball_is_extracted_recorded_and_served(
    app_server: InProcessServer, compression: str
) -> None:
    files = {
        "index.html": "<html>llo</html>",
        "tier1/data.json": '{"ok": 1}',
        "img/a.png": b"\x89PNG",
    }
    payload = tars.report_tree(files, compression)
    # The name says nothing about the compression: the content does.
    metadata = tar_metadata(filename="report.bin", sha256=sha256_hex(payload))

    sent = send(app_server.url, payload, metadata)

    assert sent.final.status_code == 204, sent.final.text
    report_url = f"{app_server.url}/reports/O4/S230518h_dir/S230518h_llo_1/"
    assert sent.final.headers["Dqr-Report-Url"] == report_url
    report_dir = app_server.data_dir / REPORT
    assert tree_of(report_dir) == {
        k: v.encode() if isinstance(v, str) else v for k, v in files.items()
    }
    assert stat.S_IMODE((report_dir / "tier1/data.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((report_dir / "tier1").stat().st_mode) == 0o755
    state = db_state(app_server.data_dir)
    assert state["reports"] == [
        ("llo", 1, "S230518h_dir/S230518h_llo_1", 3, sum(len(v) for v in files.values()))
    ]
    assert state["files"] == {
        name: (len(data), digest(data), sent.upload_id) for name, data in files.items()
    }
    record = requests.get(f"{app_server.url}/api/v1/uploads/{sent.upload_id}", timeout=10).json()
    assert record["state"] == "published" and record["sha256"] == sha256_hex(payload)
    served = requests.get(report_url + "tier1/data.json", timeout=10)
    assert served.status_code == 200 and served.text == '{"ok": 1}'
    hidden = requests.get(f"{app_server.url}/reports/O4/.dqrxfer-staging/locks/", timeout=10)
    assert hidden.status_code == 404


def test_passes_add_and_replace_files_and_keep_the_others(
    app_server: InProcessServer,
) -> None:
    first = tars.report_tree({"index.html": "v1", "tier1/a.json": "a1", "tier1/b.json": "b1"})
    second = tars.report_tree({"index.html": "v2", "tier2/c.json": "c2"}, "gz")
    third = tars.build([file("b.json", "b3"), symlink("latest", "b.json")])
    single = b"<html>summary</html>"

    assert send(app_server.url, first, tar_metadata()).final.status_code == 204
    assert send(app_server.url, second, tar_metadata()).final.status_code == 204
    sent = send(app_server.url, third, tar_metadata(subdir="tier1"))
    assert sent.final.status_code == 204, sent.final.text
    sent_file = send(
        app_server.url,
        single,
        tar_metadata(filename="summary.html", kind="file", subdir="tier2"),
    )
    assert sent_file.final.status_code == 204, sent_file.final.text

    assert tree_of(app_server.data_dir / REPORT) == {
        "index.html": b"v2",
        "tier1/a.json": b"a1",
        "tier1/b.json": b"b3",
        "tier1/latest": "-> b.json",
        "tier2/c.json": b"c2",
        "tier2/summary.html": single,
    }
    state = db_state(app_server.data_dir)
    assert sorted(state["files"]) == [
        "index.html",
        "tier1/a.json",
        "tier1/b.json",
        "tier2/c.json",
        "tier2/summary.html",
    ]
    assert state["files"]["tier1/b.json"] == (2, digest("b3"), sent.upload_id)
    total = sum(len(x) for x in ("v2", "a1", "b3", "c2")) + len(single)
    assert state["reports"] == [("llo", 1, "S230518h_dir/S230518h_llo_1", 5, total)]
    assert set(state["uploads"].values()) == {"published"}


def test_a_link_replacing_a_file_drops_its_row(app_server: InProcessServer) -> None:
    assert (
        send(
            app_server.url, tars.report_tree({"a.txt": "a", "b.txt": "b"}), tar_metadata()
        ).final.status_code
        == 204
    )
    sent = send(app_server.url, tars.build([symlink("b.txt", "a.txt")]), tar_metadata())
    assert sent.final.status_code == 204, sent.final.text
    assert tree_of(app_server.data_dir / REPORT) == {"a.txt": b"a", "b.txt": "-> a.txt"}
    state = db_state(app_server.data_dir)
    assert sorted(state["files"]) == ["a.txt"]
    assert state["reports"][0][3:] == (1, 1)


def test_links_may_not_go_through_links_already_in_the_report(app_server: InProcessServer) -> None:
    first = tars.build([file("data/x.json", "x"), symlink("current", "data")])
    assert send(app_server.url, first, tar_metadata()).final.status_code == 204
    before = tree_of(app_server.data_dir / REPORT)
    through = tars.build([symlink("x", "current/x.json")])
    sent = send(app_server.url, through, tar_metadata())
    assert sent.final.status_code == 422
    assert (
        "archive member 'x': symbolic link 'current/x.json' resolves through another"
        in sent.final.text
    )
    into = tars.build([file("current/y.json", "y")])
    sent = send(app_server.url, into, tar_metadata())
    assert sent.final.status_code == 422
    assert "'current': the report has a symbolic link here, not a directory" in sent.final.text
    assert tree_of(app_server.data_dir / REPORT) == before


def test_resending_the_last_patch_changes_nothing(app_server: InProcessServer) -> None:
    payload = tars.report_tree({"index.html": "v1", "tier1/a.json": "a1"})
    sent = send(app_server.url, payload, tar_metadata())
    assert sent.final.status_code == 204
    tree, state = tree_of(app_server.data_dir / REPORT), db_state(app_server.data_dir)

    again = resend_last_patch(app_server.url, sent, len(payload))

    assert again.status_code == 204, again.text
    assert again.headers["Dqr-Report-Url"] == sent.final.headers["Dqr-Report-Url"]
    assert tree_of(app_server.data_dir / REPORT) == tree
    assert db_state(app_server.data_dir) == state


def test_finalizing_again_after_a_crash_gives_the_same_tree_and_rows(
    app_server: InProcessServer,
) -> None:
    """The hook itself, run again on an upload whose row never reached
    "published" (a crash between the tree and the database): same result."""
    payload = tars.report_tree({"index.html": "v1", "tier1/a.json": "a1"}, "gz")
    sent = send(app_server.url, payload, tar_metadata(subdir="pass1"))
    assert sent.final.status_code == 204
    tree, state = tree_of(app_server.data_dir / REPORT), db_state(app_server.data_dir)
    settings = load_settings(None, app_server.data_dir)
    database = Database(settings.database_url)
    try:
        with database.session(write=True) as session:
            row = session.get(Upload, sent.upload_id)
            assert row is not None
            row.state = "receiving"
        info = FileStore(settings.uploads_dir).get(sent.upload_id)
        for _ in range(2):
            url = finalize_upload(database, settings, info, settings.uploads_dir / sent.upload_id)
            assert url == "/reports/O4/S230518h_dir/S230518h_llo_1/"
            assert tree_of(app_server.data_dir / REPORT) == tree
            assert db_state(app_server.data_dir) == state
    finally:
        database.dispose()


def test_an_older_upload_finalized_again_does_not_undo_a_newer_pass(
    app_server: InProcessServer,
) -> None:
    older = tars.report_tree({"index.html": "old"})
    sent_old = send(app_server.url, older, tar_metadata())
    assert (
        send(
            app_server.url, tars.report_tree({"index.html": "new"}), tar_metadata()
        ).final.status_code
        == 204
    )
    assert resend_last_patch(app_server.url, sent_old, len(older)).status_code == 204
    assert (app_server.data_dir / REPORT / "index.html").read_bytes() == b"new"


@pytest.mark.parametrize("kind", ["tar", "file"])
def test_sha256_mismatch_fails_the_upload_and_publishes_nothing(
    app_server: InProcessServer, kind: str
) -> None:
    payload = tars.report_tree({"index.html": "x"}) if kind == "tar" else b"<html></html>"
    wrong = "0" * 64
    metadata = tar_metadata(filename="index.html", kind=kind, sha256=wrong)

    sent = send(app_server.url, payload, metadata)

    assert sent.final.status_code == 422
    assert sent.final.text.startswith(
        f"sha256: the received payload hashes to {sha256_hex(payload)}, not {wrong}"
    )
    assert "nothing was published" in sent.final.text
    assert not (app_server.data_dir / "reports/O4/S230518h_dir").exists()
    state = db_state(app_server.data_dir)
    assert state["reports"] == [] and state["uploads"] == {sent.upload_id: "failed"}
    record = requests.get(f"{app_server.url}/api/v1/uploads/{sent.upload_id}", timeout=10).json()
    assert record["state"] == "failed" and record["error"].startswith("sha256:")


def test_a_file_cannot_replace_a_directory(app_server: InProcessServer) -> None:
    assert (
        send(
            app_server.url, tars.report_tree({"tier1/a.json": "a"}), tar_metadata()
        ).final.status_code
        == 204
    )
    sent = send(app_server.url, b"x", tar_metadata(filename="tier1", kind="file"))
    assert sent.final.status_code == 422
    assert sent.final.text.startswith("filename: 'tier1': the report has a directory of that name")
    sent = send(
        app_server.url, b"x", tar_metadata(filename="b", kind="file", subdir="tier1/a.json")
    )
    assert sent.final.status_code == 422
    assert sent.final.text.startswith("subdir: 'tier1/a.json': the report has a file here")
    assert tree_of(app_server.data_dir / REPORT) == {"tier1/a.json": b"a"}


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "entry-by-entry"])
def test_both_ways_of_laying_a_pass_over_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    """Where the filesystem cannot swap directories (NFS), a pass is laid over
    the live report entry by entry: the same tree and rows either way."""
    from dqrxfer.server.db import migrate
    from dqrxfer.server.reports import publish
    from dqrxfer.server.tus.store import UploadInfo

    monkeypatch.setattr(publish, "supports_exchange", lambda work: exchange)
    settings = load_settings(None, tmp_path / "data")
    settings.uploads_dir.mkdir(parents=True)
    database = Database(settings.database_url)
    try:
        migrate.upgrade(database.engine)
        passes = [
            tars.report_tree({"index.html": "v1", "tier1/a.json": "a1"}),
            tars.report_tree({"index.html": "v2", "tier1/b.json": "b2", "tier2/c.json": "c2"}),
        ]
        for number, payload in enumerate(passes):
            path = settings.uploads_dir / f"pass{number}"
            path.write_bytes(payload)
            metadata = tar_metadata(sha256=sha256_hex(payload))
            info = UploadInfo(id=f"pass{number}", length=len(payload), metadata=metadata)
            finalize_upload(database, settings, info, path)
        assert tree_of(settings.data_dir / REPORT) == {
            "index.html": b"v2",
            "tier1/a.json": b"a1",
            "tier1/b.json": b"b2",
            "tier2/c.json": b"c2",
        }
        state = db_state(settings.data_dir)
        assert state["reports"] == [("llo", 1, "S230518h_dir/S230518h_llo_1", 4, 8)]
        assert state["files"]["tier1/a.json"][2] == "pass0"
        assert state["files"]["index.html"][2] == "pass1"
        assert list((settings.data_dir / "reports/O4/.dqrxfer-staging/work").iterdir()) == []
    finally:
        database.dispose()


@pytest.mark.parametrize("policy", ["never", "complete"])
def test_the_fsync_policy_never_flushes_nothing_a_publication_writes(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    """``never`` means nothing is flushed (docs/tus.md): neither the data nor
    the names a single file or an archive is published under, nor the record.
    ``complete`` flushes each of them (the control)."""
    flushed: list[str] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def fsync(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def fdatasync(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    config = write_config(tmp_path / "server.toml", fsync=policy)
    with in_process_server(data_dir, config) as server:
        single = send(server.url, b"one file", report_metadata(filename="a.txt", subdir="new"))
        assert single.final.status_code == 204, single.final.text
        archive = tars.report_tree({"b/c.txt": "archived"})
        packed = send(server.url, archive, tar_metadata(revision="2"))
        assert packed.final.status_code == 204, packed.final.text
    report = data_dir / "reports" / "O4" / "S230518h_dir"
    assert (report / "S230518h_llo_1" / "new" / "a.txt").read_bytes() == b"one file"
    assert (report / "S230518h_llo_2" / "b" / "c.txt").read_text() == "archived"
    if policy == "never":
        assert flushed == []
    else:
        names = {Path(path).name for path in flushed}
        # the data, the directories it was published in, the record's log
        assert {"new", "S230518h_llo_1", "dqrxfer.sqlite-wal"} <= names, flushed
