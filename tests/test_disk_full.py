"""A full disk, for real: the server's data directory is a small tmpfs that
the tests fill up.  Creation, PATCH and finalization answer 507 with a
message (a warning in the log, no traceback), leave no orphan, and go on
once space is freed; ``cleanup`` removes what a crash left behind."""

from __future__ import annotations

import errno
import io
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from psycopg.errors import DiskFull
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from tusclient.client import TusClient

from dqrxfer.server.tus.errors import is_out_of_space
from support import tars
from support.cli import run_cli
from support.diskfull import fill, free_bytes, release, small_filesystem
from support.live import LiveServer
from support.tus import (
    Sent,
    create,
    create_final,
    data_file,
    dqr_upload_command,
    head,
    new_upload,
    offset_of,
    patch,
    published,
    record,
    report_metadata,
    resend_last_patch,
    send,
    sha256_hex,
    tar_metadata,
    upload_id,
    write_config,
)

pytestmark = pytest.mark.diskfull

MiB = 1024 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """The embedded default (database, uploads and reports in one directory)
    on a 24 MiB filesystem of its own."""
    with small_filesystem(tmp_path / "data", 24 * MiB) as data:
        live = LiveServer(data, workers=1).start()
        try:
            yield live
        finally:
            live.stop()


def uploads_listing(server: LiveServer) -> set[str]:
    uploads = server.data_dir / "uploads"
    return {str(path.relative_to(uploads)) for path in uploads.rglob("*")} - {"locks", "owners"}


def tree(directory: Path) -> dict[str, bytes | None]:
    """A directory's content: files with their bytes, directories as None."""
    return {
        str(path.relative_to(directory)): None if path.is_dir() else path.read_bytes()
        for path in sorted(directory.rglob("*"))
    }


def assert_clean_log(server: LiveServer) -> None:
    log = server.log()
    assert "out of storage space" in log
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log


def cleanup(server: LiveServer) -> tuple[str, str]:
    result = run_cli("dqrxfer-server", "cleanup", "--data-dir", str(server.data_dir))
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def test_creation_on_a_full_disk_answers_507_and_leaves_nothing(server: LiveServer) -> None:
    before = uploads_listing(server)
    filler = fill(server.data_dir)

    plain = create(server, 10)
    with_body = create(server, 3, body=b"abc")
    deferred = create(server, None)

    for response in (plain, with_body, deferred):
        assert response.status_code == 507, response.text
        assert response.headers["Content-Type"].startswith("text/plain")
        assert response.headers["Tus-Resumable"] == "1.0.0"
        assert response.text == (
            "the server is out of storage space: the upload was not created; retry later\n"
        )
        assert "Location" not in response.headers
    assert uploads_listing(server) == before  # no empty data file, no torn state file
    assert_clean_log(server)

    stdout, stderr = cleanup(server)  # also on the full disk
    assert "skipped: 0 uploads" in stdout and "skipped" not in stderr, (stdout, stderr)

    release(filler)
    url = new_upload(server, 3)
    assert patch(url, 0, b"abc").status_code == 204


def test_patch_filling_the_disk_keeps_its_bytes_and_resumes(server: LiveServer) -> None:
    payload = os.urandom(3 * MiB)
    metadata = report_metadata()
    url = new_upload(server, len(payload), metadata=metadata)
    assert patch(url, 0, payload[:1000]).status_code == 204
    filler = fill(server.data_dir)
    release(filler, MiB)

    response = patch(url, 1000, payload[1000:])

    assert response.status_code == 507, response.text
    kept = int(response.headers["Upload-Offset"])
    assert 1000 < kept < len(payload)
    assert response.text.startswith(
        f"the server is out of storage space: {kept - 1000} bytes of this request were stored"
    )
    assert offset_of(url) == kept
    assert data_file(server, url).read_bytes() == payload[:kept]
    # A checksummed chunk on the full disk: all or nothing, the offset stays.
    checksummed = patch(
        url, kept, payload[kept : kept + 10], {"Upload-Checksum": "sha1 " + "A" * 27 + "="}
    )
    assert checksummed.status_code == 507, checksummed.text
    assert offset_of(url) == kept
    assert not (server.data_dir / "uploads" / f"{upload_id(url)}.pending").exists()
    assert_clean_log(server)

    release(filler)
    done = patch(url, kept, payload[kept:])
    assert done.status_code == 204, done.text
    assert published(server, metadata).read_bytes() == payload
    assert record(server, url)["state"] == "published"


def test_declaring_a_length_on_a_full_disk_changes_nothing(server: LiveServer) -> None:
    url = new_upload(server, None)
    assert patch(url, 0, b"abc").status_code == 204
    filler = fill(server.data_dir)

    response = patch(url, 3, b"", {"Upload-Length": "10"})

    assert response.status_code == 507, response.text
    assert response.text == (
        "the server is out of storage space: the request was not completed; retry later\n"
    )
    assert head(url).headers["Upload-Defer-Length"] == "1"
    assert not [name for name in uploads_listing(server) if name.endswith(".tmp")]
    assert_clean_log(server)

    release(filler)
    assert patch(url, 3, b"", {"Upload-Length": "10"}).status_code == 204
    assert head(url).headers["Upload-Length"] == "10"


def test_creation_with_upload_filling_the_disk_says_where_to_resume(server: LiveServer) -> None:
    payload = os.urandom(2 * MiB)
    metadata = report_metadata()
    filler = fill(server.data_dir)
    release(filler, MiB)

    response = create(server, len(payload), metadata=metadata, body=payload)

    assert response.status_code == 507, response.text
    location = response.headers["Location"]  # created: the body is a PATCH that filled the disk
    kept = int(response.headers["Upload-Offset"])
    assert 0 < kept < len(payload) and offset_of(location) == kept

    release(filler)
    uploader = TusClient(f"{server.url}/files/").uploader(
        file_stream=io.BytesIO(payload), url=location, chunk_size=256 * 1024
    )
    uploader.upload()  # tuspy asks the offset (HEAD) and sends the rest
    assert published(server, metadata).read_bytes() == payload
    assert_clean_log(server)


def test_concatenation_out_of_space_keeps_the_partials(server: LiveServer) -> None:
    pieces = [os.urandom(2 * MiB), os.urandom(2 * MiB)]
    urls = []
    metadata = report_metadata()
    for piece in pieces:
        url = new_upload(
            server, len(piece), metadata=metadata, headers={"Upload-Concat": "partial"}
        )
        assert patch(url, 0, piece).status_code == 204
        urls.append(url)
    filler = fill(server.data_dir)
    release(filler, MiB)  # room for the final upload, not for the copy

    response = create_final(server, urls, metadata)

    assert response.status_code == 507, response.text
    assert "the partial uploads are kept but could not be concatenated" in response.text
    final_url = response.headers["Location"]
    assert not [name for name in uploads_listing(server) if name.endswith(".tmp")]
    assert [offset_of(url) for url in urls] == [len(piece) for piece in pieces]
    assert_clean_log(server)

    release(filler)
    assert head(final_url).status_code == 200  # concatenated and published now
    assert record(server, final_url)["state"] == "published"
    assert published(server, metadata).read_bytes() == b"".join(pieces)


def test_dqr_upload_gives_up_on_a_full_disk_and_resumes_once_space_is_freed(
    server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    payload = tmp_path / "big.bin"
    payload.write_bytes(os.urandom(6 * MiB))
    filler = fill(server.data_dir)
    release(filler, 2 * MiB)
    command = dqr_upload_command(
        server.url,
        "--retries",
        "2",
        "--retry-wait",
        "0.1",
        "--chunk-size",
        "1",
        str(payload),
    )

    first = run_cli(*command, env=client_env)

    assert first.returncode == 5, first.stderr  # gave up: worth a retry
    assert "out of storage space" in first.stderr
    stored = [path for path in (server.data_dir / "uploads").iterdir() if len(path.name) == 32]
    assert stored and all(0 < path.stat().st_size < 6 * MiB for path in stored)

    release(filler)
    second = run_cli(*command, env=client_env)

    assert second.returncode == 0, second.stderr
    assert "resum" in second.stderr.lower(), second.stderr
    assert server.published("big.bin").read_bytes() == payload.read_bytes()
    assert_clean_log(server)


def test_finalization_out_of_space_leaves_the_report_unchanged_and_retries(
    server: LiveServer,
) -> None:
    first = send(server.url, b"first", tar_metadata(filename="index.html", kind="file"))
    assert first.final.status_code == 204, first.final.text
    report = server.published()
    before = tree(report)
    archive = tars.report_tree({"big/data.bin": os.urandom(4 * MiB), "index.html": "new"})
    metadata = tar_metadata(sha256=sha256_hex(archive))
    url = new_upload(server, len(archive), metadata=metadata)
    filler = fill(server.data_dir)
    release(filler, len(archive) + MiB)  # room for the upload, not for its extraction

    response = patch(url, 0, archive)

    assert response.status_code == 507, response.text
    assert "the upload is complete and kept" in response.text
    assert tree(report) == before
    work = report.parent.parent / ".dqrxfer-staging" / "work"
    assert list(work.iterdir()) == []
    assert offset_of(url) == len(archive)  # HEAD retries and still finds no space
    assert record(server, url)["state"] == "receiving"
    assert_clean_log(server)

    release(filler)
    retried = resend_last_patch(server.url, Sent(url, response), len(archive))
    assert retried.status_code == 204, retried.text
    assert "Dqr-Report-Url" in retried.headers
    assert (report / "index.html").read_text() == "new"
    assert (report / "big" / "data.bin").stat().st_size == 4 * MiB
    assert record(server, url)["state"] == "published"


def test_single_file_publication_out_of_space_leaves_no_partial_copy(tmp_path: Path) -> None:
    """The report tree on a filesystem of its own (the file is copied, not
    hard-linked, into it): a copy that runs out of space is removed whole."""
    data = tmp_path / "data"
    with small_filesystem(tmp_path / "reports", 4 * MiB) as reports:
        config = tmp_path / "server.toml"
        config.write_text(
            f'data_dir = "{data}"\nauto_upgrade = true\nserve_reports = true\n'
            f'[projects.O4]\nreports_root = "{reports}"\nurl = "/reports/O4/"\n'
        )
        server = LiveServer(data, config=config, workers=1).start()
        try:
            payload = os.urandom(2 * MiB)
            metadata = report_metadata()
            url = new_upload(server, len(payload), metadata=metadata)
            assert patch(url, 0, payload[:-1]).status_code == 204
            filler = fill(reports)
            release(filler, MiB)

            last = patch(url, len(payload) - 1, payload[-1:])

            assert last.status_code == 507, last.text
            assert "the upload is complete and kept" in last.text
            left = [
                path
                for path in reports.rglob("*")
                if path.is_file() and path != filler and path.parent.name != "locks"
            ]
            assert left == []  # no half-copied temporary file in the report (report locks stay)
            assert record(server, url)["state"] == "receiving"
            assert_clean_log(server)

            release(filler)
            done = patch(url, len(payload), b"")
            assert done.status_code == 204, done.text
            report_file = reports / "S230518h_dir" / "S230518h_llo_1" / metadata["filename"]
            assert report_file.read_bytes() == payload
        finally:
            server.stop()


def test_head_finishes_an_upload_once_space_is_freed(server: LiveServer) -> None:
    archive = tars.report_tree({"data.bin": os.urandom(4 * MiB)})
    url = new_upload(server, len(archive), metadata=tar_metadata(sha256=sha256_hex(archive)))
    filler = fill(server.data_dir)
    release(filler, len(archive) + MiB)
    assert patch(url, 0, archive).status_code == 507

    release(filler)
    assert head(url).status_code == 200  # what dqr-upload asks while it waits
    assert record(server, url)["state"] == "published"
    assert server.published("data.bin").stat().st_size == 4 * MiB


def _age(paths: list[Path], seconds: float) -> None:
    moment = time.time() - seconds
    for path in paths:
        os.utime(path, (moment, moment), follow_symlinks=False)


def test_cleanup_removes_what_a_crash_left_once_and_for_all(data_dir: Path) -> None:
    server = LiveServer(data_dir, workers=1).start()
    try:
        alive = upload_id(new_upload(server, 10))  # an ordinary unfinished upload
    finally:
        server.stop()
    uploads = data_dir / "uploads"
    torn, data_only, state_only, marker_only, links_only, young = (
        secrets.token_hex(16) for _ in range(6)
    )
    (uploads / torn).touch()  # what a full disk left before: empty data, empty state
    (uploads / f"{torn}.info").touch()
    (uploads / data_only).write_bytes(b"x")
    (uploads / f"{state_only}.info").write_text(json.dumps({"id": state_only, "length": 5}))
    (uploads / f"{marker_only}.pending").write_text("0")
    (uploads / "links" / links_only).mkdir(parents=True)
    (uploads / "links" / links_only / alive).touch()
    (uploads / young).touch()  # a creation in progress, as far as anyone knows
    temporary = uploads / f".{alive}.info.0123abcd.tmp"
    temporary.write_text("{")
    work = data_dir / "reports" / "O4" / ".dqrxfer-staging" / "work"
    stale_work = work / f"{torn}.0123456789ab"
    (stale_work / "extract").mkdir(parents=True)
    (stale_work / "extract" / "member.bin").write_bytes(b"half")
    (work / f"{stale_work.name}.lock").touch()  # nobody holds it: its process died
    old = [path for path in uploads.rglob("*") if path.name != young]
    _age(old, 2 * 24 * 3600)

    result = run_cli("dqrxfer-server", "cleanup", "--data-dir", str(data_dir))

    assert result.returncode == 0, result.stderr
    assert "skipped" not in result.stderr, result.stderr
    for gone in (torn, data_only, state_only, marker_only, links_only):
        assert f"removed remains of unusable upload {gone}" in result.stdout
    assert "5 remains of unusable uploads, 1 stale temporary file;" in result.stdout
    assert f"removed stale staging directory {stale_work}" in result.stdout
    assert sorted(
        path.name for path in uploads.iterdir() if path.name not in ("locks", "links", "owners")
    ) == sorted([alive, f"{alive}.info", young])
    assert not stale_work.exists() and not (uploads / "links" / links_only).exists()

    again = run_cli("dqrxfer-server", "cleanup", "--data-dir", str(data_dir))
    assert again.returncode == 0 and "skipped" not in again.stderr, again.stderr
    assert "0 remains of unusable uploads, 0 stale temporary files;" in again.stdout

    _age([uploads / young], 2 * 3600)
    last = run_cli("dqrxfer-server", "cleanup", "--data-dir", str(data_dir))
    assert f"removed remains of unusable upload {young}" in last.stdout, last.stdout
    assert (uploads / alive).exists() and (uploads / f"{alive}.info").exists()


def test_a_full_database_disk_answers_507_and_the_upload_is_finished_later(
    tmp_path: Path,
) -> None:
    """The database on a filesystem of its own: a creation whose row cannot
    be written is undone; a publication whose record cannot be written is
    retried, and recorded, once there is space."""
    with small_filesystem(tmp_path / "db", 4 * MiB) as database:
        config = write_config(
            tmp_path / "config.toml", database_url=f"sqlite:///{database}/dqrxfer.sqlite"
        )
        data = tmp_path / "data"
        upgrade = ["dqrxfer-server", "db", "upgrade", "--config", str(config)]
        assert run_cli(*upgrade, "--data-dir", str(data)).returncode == 0
        server = LiveServer(data, config=config, workers=1).start()
        try:
            before = uploads_listing(server)
            filler = fill(database)
            refused = create(server, 10)
            assert refused.status_code == 507, refused.text
            assert "the upload was not created" in refused.text
            assert uploads_listing(server) == before  # the store's files were removed again

            release(filler)
            payload = os.urandom(100_000)
            metadata = report_metadata()
            url = new_upload(server, len(payload), metadata=metadata)
            assert patch(url, 0, payload[:-1]).status_code == 204
            filler = fill(database)
            last = patch(url, len(payload) - 1, payload[-1:])
            assert last.status_code == 507, last.text
            assert "the upload is complete and kept" in last.text
            assert record(server, url)["state"] == "receiving"

            release(filler)
            assert head(url).status_code == 200
            assert record(server, url)["state"] == "published"
            assert published(server, metadata).read_bytes() == payload
            assert_clean_log(server)
        finally:
            server.stop()


def test_a_full_disk_under_the_database_is_recognised(tmp_path: Path) -> None:
    """SQLite's own 'database or disk is full', through SQLAlchemy, on a real full disk."""
    with small_filesystem(tmp_path / "db", 2 * MiB) as directory:
        engine = create_engine(f"sqlite:///{directory}/full.sqlite")
        try:
            with engine.begin() as connection:
                connection.execute(text("create table blobs (data blob)"))
            fill(directory)
            assert free_bytes(directory) == 0
            with pytest.raises(OperationalError) as caught, engine.begin() as connection:
                connection.execute(text("insert into blobs values (:data)"), {"data": b"x" * MiB})
        finally:
            engine.dispose()
    assert is_out_of_space(caught.value)
    # PostgreSQL's disk_full (SQLSTATE 53100) as SQLAlchemy wraps it: not filled for real here.
    assert is_out_of_space(OperationalError("INSERT", {}, DiskFull("could not extend file")))
    assert is_out_of_space(OSError(errno.EDQUOT, "quota"))
    assert not is_out_of_space(OSError(errno.EACCES, "denied"))
    assert not is_out_of_space(requests.ConnectionError("reset"))


def test_a_connection_opened_on_a_full_database_disk_is_out_of_space(tmp_path: Path) -> None:
    """A new connection cannot make the write-ahead log's index on a full disk:
    SQLite says only 'disk I/O error'; the server must still see a full disk
    (507), not an internal error (500)."""
    from dqrxfer.server.db import Database

    with small_filesystem(tmp_path / "db", 2 * MiB) as directory:
        url = f"sqlite:///{directory}/full.sqlite"
        first = Database(url)
        try:
            with first.transaction(write=True) as connection:
                connection.execute(text("create table blobs (data blob)"))
        finally:
            first.engine.dispose()
        fill(directory)
        assert free_bytes(directory) == 0
        second = Database(url)
        try:
            with pytest.raises(Exception) as caught, second.transaction(write=True) as connection:
                connection.execute(text("insert into blobs values (x'00')"))
        finally:
            second.engine.dispose()
    assert is_out_of_space(caught.value), repr(caught.value)


def test_a_worker_starting_on_a_full_database_disk_logs_a_warning_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's recovery pass opens the worker's first database connection
    in a thread of its own, which a busy machine may run only once the disk
    is full (the live test above fills it as soon as the server answers):
    a full disk, said in one warning, not 'recovery failed' with a traceback.
    Whatever it left is finished by the next request for it (HEAD)."""
    from dqrxfer.server.config import load_settings
    from dqrxfer.server.reports.recovery import start_recovery
    from dqrxfer.server.services import build_services

    with small_filesystem(tmp_path / "db", 2 * MiB) as database:
        config = write_config(
            tmp_path / "config.toml", database_url=f"sqlite:///{database}/dqrxfer.sqlite"
        )
        built = build_services(load_settings(config, tmp_path / "data"))
        try:
            built.database.dispose()  # as a forked worker starts: no connection open
            fill(database)
            with caplog.at_level("INFO", logger="dqrxfer"):
                start_recovery(built.reports, built.uploads).join(timeout=60)
        finally:
            built.database.dispose()
    messages = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert [level for level, _ in messages] == ["WARNING"], messages
    assert "out of storage space" in messages[0][1], messages
    assert not [record for record in caplog.records if record.exc_info], messages
