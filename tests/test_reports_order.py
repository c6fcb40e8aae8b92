"""Recovery never goes backwards, and a publication the database lost is
finalized again.

An upload whose finalization is cut at a fault point (the server killed with
SIGKILL there), then a later upload of the same paths into the same report
through a restarted server, then the cut upload finalized again (start-up
recovery, or its client re-sending the last PATCH): the later upload's
content stays, on disk and in the database, the rest of the earlier upload is
published, and the earlier upload ends ``published``.  The restarted server's
own recovery is held off (the test holds ``recovery.lock``) until the later
upload is in.  On SQLite and PostgreSQL.

The commits finalization relies on are durable: SQLite flushes its log after
them, PostgreSQL commits them with ``synchronous_commit`` on.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from dqrxfer.server.db import Database
from dqrxfer.server.reports.archive import StagedArchive, StagedFile
from dqrxfer.server.reports.supersession import Superseded, drop_superseded
from support import tars
from support.cli import run_cli
from support.live import LiveServer
from support.tus import (
    Sent,
    create_upload,
    patch_in_background,
    resend_last_patch,
    send,
    tar_metadata,
    wait_for,
    write_config,
)

DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

EARLIER = {
    "index.html": "<html>earlier</html>",
    "tier1/data.json": '{"earlier": 1}',
    "tier2/b.txt": "earlier b",
    "earlier-only.txt": "only in the earlier upload",
}
LATER = tars.build(
    [
        tars.file("index.html", "<html>later</html>"),
        tars.file("tier1/data.json", '{"later": 2}'),
        tars.symlink("tier2/b.txt", "../index.html"),  # a link where the earlier had a file
        tars.file("later-only.txt", "only in the later upload"),
    ]
)


@dataclass
class Setup:
    data_dir: Path
    config: Path
    database_url: str

    def server(self, **kwargs: object) -> LiveServer:
        return LiveServer(self.data_dir, config=self.config, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(params=DATABASES)
def setup(request: pytest.FixtureRequest, tmp_path: Path, data_dir: Path) -> Setup:
    keys: dict[str, object] = {}
    url = f"sqlite:///{data_dir / 'dqrxfer.sqlite'}"
    if request.param == "postgresql":
        url = keys["database_url"] = request.getfixturevalue("postgres_url")
    return Setup(data_dir, write_config(tmp_path / "config.toml", **keys), url)


def sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@contextmanager
def recovery_held_off(data_dir: Path) -> Iterator[None]:
    """Hold the recovery lock: servers started meanwhile skip their start-up recovery."""
    fd = os.open(data_dir / "recovery.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def cut_finalization(
    setup: Setup, tmp_path: Path, point: str, payload: bytes, metadata: dict[str, str]
) -> str:
    """Send an upload whose finalization stops at ``point``; kill the server there."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    marker = tmp_path / f"reached-{point}"
    crashing = setup.server(env={"DQRXFER_TEST_FAULT": f"{point}:{marker}"}).start()
    try:
        url = create_upload(crashing.url, len(payload), metadata)
        patcher = patch_in_background(url, payload)
        wait_for(marker.exists, timeout=120, what=f"the fault point {point}")
    finally:
        crashing.stop(signal.SIGKILL)
    patcher.join(timeout=60)
    return url.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class Ledger:
    files: dict[str, tuple[str, str]]  # relpath -> (upload id, sha256)
    states: dict[str, str]
    orders: dict[str, int | None]
    file_count: int
    superseded_rows: int


def ledger(database_url: str) -> Ledger:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            files = {
                row.relpath: (row.upload_id, row.sha256)
                for row in connection.execute(
                    text("SELECT relpath, upload_id, sha256 FROM report_files")
                )
            }
            uploads = list(
                connection.execute(text("SELECT id, state, finalize_order FROM uploads"))
            )
            counts = connection.execute(text("SELECT file_count FROM reports")).scalars().all()
            superseded = connection.execute(text("SELECT count(*) FROM superseded_paths")).scalar()
    finally:
        engine.dispose()
    return Ledger(
        files,
        {row.id: row.state for row in uploads},
        {row.id: row.finalize_order for row in uploads},
        sum(counts),
        int(superseded or 0),
    )


def on_disk(report: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The report's regular files (sha256) and links (target)."""
    files, links = {}, {}
    for path in report.rglob("*"):
        name = path.relative_to(report).as_posix()
        if path.is_symlink():
            links[name] = os.readlink(path)
        elif path.is_file():
            files[name] = sha256(path.read_bytes())
    return files, links


def resend_last(server: LiveServer, upload_id: str, length: int) -> None:
    """The cut upload's client re-sends its last PATCH: finalized again, answered 204."""
    url = f"{server.url}/files/{upload_id}"
    again = resend_last_patch(server.url, Sent(url, requests.Response()), length)
    assert again.status_code == 204, again.text
    assert again.headers["Dqr-Report-Url"].endswith("/S230518h_llo_1/")


def recover(setup: Setup, upload_id: str) -> None:
    """A server started now finalizes the upload in its start-up recovery."""
    restarted = setup.server().start()
    try:
        wait_for(
            lambda: ledger(setup.database_url).states[upload_id] == "published",
            timeout=120,
            interval=0.1,
            what=f"recovery to finalize upload {upload_id}",
        )
    finally:
        restarted.stop()


def later_then_again(
    setup: Setup, upload_id: str, length: int, how: str, payload: bytes, metadata: dict[str, str]
) -> tuple[Sent, Ledger]:
    """A later upload of ``payload`` while recovery is held off, then the cut
    upload finalized again (``how``: "patch" or "recovery"); returns the later
    upload and the ledger between the two."""
    with recovery_held_off(setup.data_dir):
        server = setup.server().start()
        try:
            later = send(server.url, payload, metadata)
            assert later.final.status_code == 204, later.final.text
            between = ledger(setup.database_url)
            if how == "patch":
                resend_last(server, upload_id, length)
        finally:
            server.stop()
    if how == "recovery":
        recover(setup, upload_id)
    return later, between


@pytest.mark.parametrize("how", ["recovery", "patch"])
@pytest.mark.parametrize("point", ["after-extract", "after-publish"])
def test_cut_archive_finalized_again_keeps_a_later_uploads_paths(
    setup: Setup, tmp_path: Path, point: str, how: str
) -> None:
    earlier = tars.report_tree(EARLIER, "gz")
    earlier_id = cut_finalization(setup, tmp_path, point, earlier, tar_metadata())
    report = setup.data_dir / "reports/O4/S230518h_dir/S230518h_llo_1"
    cut = ledger(setup.database_url)
    assert cut.states == {earlier_id: "receiving"}
    assert cut.orders[earlier_id] is not None, "the place is taken before anything is published"
    assert report.exists() == (point == "after-publish")

    later, between = later_then_again(
        setup, earlier_id, len(earlier), how, LATER, tar_metadata(filename="later.tar")
    )
    assert between.states == {earlier_id: "receiving", later.upload_id: "published"}
    assert between.superseded_rows == 4, "the later upload told the cut one its four paths"

    files, links = on_disk(report)
    assert links == {"tier2/b.txt": "../index.html"}
    assert files == {
        "index.html": sha256("<html>later</html>"),
        "tier1/data.json": sha256('{"later": 2}'),
        "later-only.txt": sha256("only in the later upload"),
        "earlier-only.txt": sha256(EARLIER["earlier-only.txt"]),
    }
    after = ledger(setup.database_url)
    assert after.states == {earlier_id: "published", later.upload_id: "published"}
    assert after.files == {
        "index.html": (later.upload_id, files["index.html"]),
        "tier1/data.json": (later.upload_id, files["tier1/data.json"]),
        "later-only.txt": (later.upload_id, files["later-only.txt"]),
        "earlier-only.txt": (earlier_id, files["earlier-only.txt"]),
    }
    assert after.file_count == 4
    assert after.superseded_rows == 0
    earlier_order, later_order = after.orders[earlier_id], after.orders[later.upload_id]
    assert earlier_order is not None and later_order is not None
    assert earlier_order < later_order


@pytest.mark.parametrize("how", ["recovery", "patch"])
def test_cut_file_finalized_again_keeps_a_later_uploads_file(
    setup: Setup, tmp_path: Path, how: str
) -> None:
    metadata = tar_metadata(filename="index.html", kind="file")
    earlier = b"<html>earlier file</html>"
    earlier_id = cut_finalization(setup, tmp_path, "after-publish", earlier, metadata)
    published = setup.data_dir / "reports/O4/S230518h_dir/S230518h_llo_1/index.html"
    assert published.read_bytes() == earlier

    later, between = later_then_again(
        setup, earlier_id, len(earlier), how, b"<html>later file</html>", metadata
    )
    assert between.files == {"index.html": (later.upload_id, sha256(b"<html>later file</html>"))}
    assert between.superseded_rows == 1

    assert published.read_bytes() == b"<html>later file</html>"
    after = ledger(setup.database_url)
    assert after.states == {earlier_id: "published", later.upload_id: "published"}
    assert after.files == {"index.html": (later.upload_id, sha256(b"<html>later file</html>"))}
    assert after.superseded_rows == 0


def test_two_cut_uploads_of_the_same_paths_recovered_together_end_with_the_later(
    setup: Setup, tmp_path: Path
) -> None:
    metadata = tar_metadata(filename="index.html", kind="file")
    earlier_id = cut_finalization(setup, tmp_path / "1", "after-publish", b"earlier", metadata)
    with recovery_held_off(setup.data_dir):
        later_id = cut_finalization(setup, tmp_path / "2", "after-publish", b"later", metadata)
    published = setup.data_dir / "reports/O4/S230518h_dir/S230518h_llo_1/index.html"
    assert published.read_bytes() == b"later"
    cut = ledger(setup.database_url)
    assert cut.states == {earlier_id: "receiving", later_id: "receiving"}
    assert cut.superseded_rows == 1  # recorded by the later one before it published

    recover(setup, later_id)  # the earlier first (its place is lower), then the later

    assert published.read_bytes() == b"later"
    after = ledger(setup.database_url)
    assert after.states == {earlier_id: "published", later_id: "published"}
    assert after.files == {"index.html": (later_id, sha256(b"later"))}
    assert after.superseded_rows == 0


def test_cut_upload_finalized_again_keeps_what_reports_register_published(
    setup: Setup, tmp_path: Path
) -> None:
    metadata = tar_metadata(filename="index.html", kind="file")
    earlier = b"<html>earlier file</html>"
    earlier_id = cut_finalization(setup, tmp_path, "after-publish", earlier, metadata)
    source = tmp_path / "made-at-cit"
    source.mkdir()
    (source / "index.html").write_text("<html>registered</html>")
    registered = run_cli(
        "dqrxfer-server",
        *("reports", "register", "--project", "O4", "--graceid", "S230518h"),
        *("--site", "llo", "--revision", "1", "--path", str(source)),
        *("--config", str(setup.config), "--data-dir", str(setup.data_dir)),
    )
    assert registered.returncode == 0, registered.stderr
    assert ledger(setup.database_url).superseded_rows == 1

    recover(setup, earlier_id)

    published = setup.data_dir / "reports/O4/S230518h_dir/S230518h_llo_1/index.html"
    assert published.read_text() == "<html>registered</html>"
    after = ledger(setup.database_url)
    assert after.files == {"index.html": (None, sha256("<html>registered</html>"))}
    assert after.superseded_rows == 0


def test_completed_upload_whose_record_was_lost_is_finalized_again(setup: Setup) -> None:
    """A power loss took the commit recording the publication, while the
    rename ``<id>.info -> <id>.done`` and the published file survived."""
    server = setup.server().start()
    payload = b"<html>report</html>"
    sent = send(server.url, payload, tar_metadata(filename="index.html", kind="file"))
    assert sent.final.status_code == 204, sent.final.text
    server.stop()
    assert (setup.data_dir / "uploads" / f"{sent.upload_id}.done").exists()
    undo_publication_record(setup.database_url, sent.upload_id)
    assert ledger(setup.database_url).states == {sent.upload_id: "receiving"}

    restarted = setup.server().start()
    try:
        wait_for(
            lambda: ledger(setup.database_url).states[sent.upload_id] == "published",
            timeout=120,
            interval=0.1,
            what="recovery to finalize the completed upload again",
        )
        links = requests.get(f"{restarted.url}/api/v1/events/S230518h/reports", timeout=30)
        assert links.status_code == 200
        assert [(r["site"], r["revision"]) for r in links.json()["reports"]] == [("llo", 1)]
    finally:
        restarted.stop()
    assert ledger(setup.database_url).files == {"index.html": (sent.upload_id, sha256(payload))}


def undo_publication_record(database_url: str, upload_id: str) -> None:
    """The database as it was before the commit that recorded the publication
    of ``upload_id`` (the only upload of its report)."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            report_id = connection.execute(
                text("SELECT report_id FROM uploads WHERE id = :id"), {"id": upload_id}
            ).scalar_one()
            connection.execute(
                text(
                    "UPDATE uploads SET state = 'receiving', sha256 = NULL, finished = NULL,"
                    " report_id = NULL WHERE id = :id"
                ),
                {"id": upload_id},
            )
            connection.execute(
                text("DELETE FROM report_files WHERE report_id = :r"), {"r": report_id}
            )
            connection.execute(text("DELETE FROM reports WHERE id = :r"), {"r": report_id})
            connection.execute(text("DELETE FROM events"))
    finally:
        engine.dispose()


# -- durability of the commits finalization relies on -------------------------------


class _LogFlushes:
    """Records the files ``os.fdatasync`` flushes (by inode), and whether the
    database's write lock was free when each flush began."""

    def __init__(self, database_path: Path) -> None:
        self.database_path = database_path
        self.flushed: list[tuple[int, bool]] = []
        self._real = os.fdatasync

    def __call__(self, fd: int) -> None:
        probe = sqlite3.connect(self.database_path, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")  # fails at once while a writer holds the lock
            probe.execute("ROLLBACK")
            lock_free = True
        except sqlite3.OperationalError:
            lock_free = False
        finally:
            probe.close()
        self.flushed.append((os.fstat(fd).st_ino, lock_free))
        self._real(fd)


def test_durable_transactions_flush_the_log_after_the_commit_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: every transaction commits with synchronous=NORMAL; a durable one
    then flushes the write-ahead log (the file holding its commit) once the
    write lock is released, and a new log after SQLite replaced it."""
    path = tmp_path / "db.sqlite"
    database = Database(f"sqlite:///{path}")
    flushes = _LogFlushes(path)
    monkeypatch.setattr(os, "fdatasync", flushes)
    try:
        with database.transaction(write=True) as connection:
            connection.exec_driver_sql("CREATE TABLE probe (value TEXT)")
        levels = []
        for durable in (False, True, False, True):
            with database.transaction(write=True, durable=durable) as connection:
                levels.append(connection.exec_driver_sql("PRAGMA synchronous").scalar())
                connection.exec_driver_sql("INSERT INTO probe VALUES (?)", (str(durable),))
        assert levels == [1, 1, 1, 1]  # NORMAL
        log = Path(f"{path}-wal")
        assert flushes.flushed == [(log.stat().st_ino, True)] * 2
        # The last connection closed: SQLite checkpoints and removes the log,
        # and makes a new one at the next write.
        database.engine.dispose()
        assert not log.exists()
        with database.transaction(write=True, durable=True) as connection:
            connection.exec_driver_sql("INSERT INTO probe VALUES ('again')")
        assert flushes.flushed[2:] == [(log.stat().st_ino, True)]
        with database.session() as session:
            assert session.connection().exec_driver_sql("PRAGMA synchronous").scalar() == 1
    finally:
        database.dispose()


@pytest.mark.postgres
def test_durable_transactions_commit_with_synchronous_commit_on_postgres(postgres_url: str) -> None:
    database = Database(postgres_url)
    try:
        with database.engine.connect() as connection:  # a session that would not wait
            connection.exec_driver_sql("SET synchronous_commit TO off")
            connection.commit()
        with database.transaction(write=True, durable=True) as connection:
            assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        with database.transaction(write=True) as connection:
            assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
    finally:
        database.dispose()


# -- which paths a later upload took ----------------------------------------------------


def test_superseded_covers_the_path_what_is_under_it_and_what_its_parents_became() -> None:
    taken = Superseded(["index.html", "plots/a.png", "data"])
    assert taken.covers("index.html")
    assert taken.covers("plots")  # a file where the later upload has a directory
    assert taken.covers("data/x.json")  # under a file or link of the later upload
    assert not taken.covers("plots/b.png")
    assert not taken.covers("index.htm")
    assert not taken.covers_tree("plots")  # the earlier upload's directory stays
    assert taken.covers_tree("data/deeper")


def test_drop_superseded_removes_entries_and_their_staged_files(tmp_path: Path) -> None:
    root = tmp_path / "staged"
    for name in ("index.html", "data/x.json", "plots/b.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    staged = StagedArchive(
        root,
        files={name: StagedFile(1, "") for name in ("index.html", "data/x.json", "plots/b.png")},
        directories={"data", "plots"},
        links={"plots/latest": "b.png"},
    )
    taken = Superseded(["sub/data", "sub/plots/latest"])
    assert drop_superseded(staged, "sub/", taken) == ["sub/data/x.json", "sub/plots/latest"]
    assert set(staged.files) == {"index.html", "plots/b.png"}
    assert staged.directories == {"plots"}
    assert staged.links == {}
    assert not (root / "data").exists()
    assert (root / "plots/b.png").exists()


def test_a_later_upload_refused_by_the_tree_check_leaves_the_cut_uploads_paths_to_it(
    setup: Setup, tmp_path: Path
) -> None:
    """The later upload records its paths as superseded before it publishes;
    when the whole-tree check then refuses it (nothing published), the
    records are withdrawn and the cut upload, finished again, publishes them."""
    base = tars.build([tars.symlink("a", "f/..")])  # inside while f is missing
    server = setup.server().start()
    try:
        assert send(server.url, base, tar_metadata(filename="base.tar")).final.status_code == 204
    finally:
        server.stop()
    earlier = tars.report_tree(EARLIER, "gz")
    earlier_id = cut_finalization(setup, tmp_path, "after-extract", earlier, tar_metadata())

    escaping = tars.build(
        [tars.file("index.html", "<html>later</html>"), tars.symlink("f", ".")]
    )  # f -> . would make a -> f/.. the event directory
    with recovery_held_off(setup.data_dir):
        server = setup.server().start()
        try:
            later = send(server.url, escaping, tar_metadata(filename="later.tar"))
        finally:
            server.stop()
    assert later.final.status_code == 422, later.final.text
    assert "leaves the report" in later.final.text
    assert ledger(setup.database_url).superseded_rows == 0, "the refused upload's claim is gone"

    recover(setup, earlier_id)
    report = setup.data_dir / "reports/O4/S230518h_dir/S230518h_llo_1"
    files, links = on_disk(report)
    assert links == {"a": "f/.."}
    assert files == {name: sha256(content) for name, content in EARLIER.items()}
    assert ledger(setup.database_url).states[earlier_id] == "published"
