"""The expiration extension and ``dqrxfer-server cleanup`` against a live
server whose unfinished uploads expire four seconds after their last change."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

from support.cli import run_cli
from support.live import LiveServer
from support.tus import (
    create,
    create_final,
    data_file,
    head,
    new_upload,
    offset_of,
    patch,
    published,
    record,
    report_metadata,
    upload_id,
    wait_for,
    write_config,
)

EXPIRY = 4


def cleanup(server: LiveServer, *args: str) -> str:
    assert server.config is not None
    result = run_cli(
        "dqrxfer-server",
        "cleanup",
        "--config",
        str(server.config),
        "--data-dir",
        str(server.data_dir),
        *args,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def named(url: str, filename: str) -> str:
    """How ``cleanup`` names an upload of ``report_metadata(filename)``."""
    return f"{upload_id(url)} (project O4, graceid S230518h, site llo, revision 1, file {filename})"


def test_unfinished_uploads_expire_and_cleanup_removes_them(tmp_path: Path, data_dir: Path) -> None:
    config = write_config(tmp_path / "config.toml", upload_expiry=EXPIRY)
    server = LiveServer(data_dir, config=config).start()
    try:
        response = create(server, 10, metadata=report_metadata("stale.bin"))
        stale = response.headers["Location"]
        expires = parsedate_to_datetime(response.headers["Upload-Expires"]).timestamp()
        assert abs(expires - (time.time() + EXPIRY)) < 60
        assert patch(stale, 0, b"abc").status_code == 204
        # A complete partial upload that no final upload joined (yet) ...
        partial = new_upload(
            server,
            2,
            metadata=report_metadata("alone.bin"),
            headers={"Upload-Concat": "partial"},
        )
        assert patch(partial, 0, b"ab").status_code == 204
        assert "Upload-Expires" in head(partial).headers  # partial uploads always may expire
        # ... and one that a final upload joined and published.
        joined_metadata = report_metadata("joined.bin")
        joined = new_upload(
            server, 4, metadata=joined_metadata, headers={"Upload-Concat": "partial"}
        )
        assert patch(joined, 0, b"join").status_code == 204
        final = create_final(server, [joined], metadata=joined_metadata)
        assert final.status_code == 201, final.text
        assert published(server, joined_metadata).read_bytes() == b"join"
        done = new_upload(server, 4)
        assert patch(done, 0, b"done").status_code == 204
        empty = new_upload(server, 0)

        for url in (stale, partial, joined):
            wait_for(lambda url=url: head(url).status_code == 410, what=f"{url} to expire")
        response = patch(stale, 3, b"def")
        assert response.status_code == 410 and "expired" in response.text
        for url in (done, empty):
            info = head(url)
            assert info.status_code == 200 and "Upload-Expires" not in info.headers

        listed = cleanup(server, "--dry-run")
        assert (
            f"would remove expired upload {named(stale, 'stale.bin')}: 3 of 10 bytes received\n"
            in listed
        )
        assert (
            f"would remove finished partial upload {named(joined, 'joined.bin')}: joined into "
            f"final upload {upload_id(final.headers['Location'])} (published), 4 bytes\n" in listed
        )
        assert listed.endswith(
            "would remove: 1 expired upload, 2 finished partial uploads, 0 finished uploads "
            "past retention, 0 stale staging directories; not looked at (dry run): interrupted "
            "uploads, remains of unusable uploads, stale temporary files\n"
        )
        assert data_file(server, stale).exists()

        output = cleanup(server)
        assert f"removed expired upload {named(stale, 'stale.bin')}: 3 of 10 bytes received" in (
            output
        )
        assert (
            f"removed finished partial upload {named(partial, 'alone.bin')}: complete, but no "
            "final upload kept joins it, 2 bytes\n" in output
        )
        assert f"removed finished partial upload {named(joined, 'joined.bin')}: joined" in output
        assert "expired upload " + upload_id(joined) not in output
        assert output.endswith(
            "removed: 1 expired upload, 2 finished partial uploads, 0 finished uploads past "
            "retention, 0 stale staging directories, 0 remains of unusable uploads, 0 stale "
            "temporary files; finished: 0 interrupted uploads; skipped: 0 uploads\n"
        )
        for url in (stale, partial, joined):
            assert head(url).status_code == 404
            assert not data_file(server, url).exists()
            assert not data_file(server, url).with_suffix(".info").exists()
        assert record(server, stale)["state"] == "expired"
        assert published(server, joined_metadata).read_bytes() == b"join"
        assert offset_of(done) == 4 and offset_of(empty) == 0
        assert "removed: 0 expired uploads, 0 finished partial uploads" in cleanup(server)
    finally:
        server.discard()


def cut_before_finishing(
    data_dir: Path, config: Path, metadata: dict[str, str]
) -> tuple[LiveServer, str]:
    """A server (stopped) and its upload of ``abcdef`` with ``metadata``
    whose last bytes reached the data file, then the server died before
    finishing it."""
    server = LiveServer(data_dir, config=config).start()
    try:
        url = new_upload(server, 6, metadata=metadata)
        assert patch(url, 0, b"abc").status_code == 204
    finally:
        server.stop()
    with open(data_file(server, url), "ab") as handle:
        handle.write(b"def")
    return server, url


def test_cleanup_finishes_an_upload_whose_finalization_a_crash_interrupted(
    tmp_path: Path, data_dir: Path
) -> None:
    metadata = report_metadata()
    server, url = cut_before_finishing(data_dir, write_config(tmp_path / "config.toml"), metadata)
    # The server died before post_finish, leaving a temporary file of a state
    # write (and one a day old).
    fresh = data_dir / "uploads" / f".{upload_id(url)}.info.0a1b2c3d.tmp"
    stale = data_dir / "uploads" / f".{upload_id(url)}.info.4e5f6071.tmp"
    fresh.write_text("{")
    stale.write_text("{")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))
    output = run_cli(
        "dqrxfer-server", "cleanup", "--config", str(server.config), "--data-dir", str(data_dir)
    ).stdout
    assert f"finished interrupted upload {named(url, metadata['filename'])}: published\n" in output
    assert (
        "0 remains of unusable uploads, 1 stale temporary file; finished: 1 interrupted upload"
        in (output)
    )
    assert fresh.exists() and not stale.exists()
    assert published(server, metadata).read_bytes() == b"abcdef"
    server.start()
    try:
        assert record(server, url)["state"] == "published"
        assert f"finished interrupted upload {upload_id(url)}" not in cleanup(server)
    finally:
        server.discard()


def test_published_uploads_leave_the_uploads_directory_after_their_retention(
    tmp_path: Path, data_dir: Path
) -> None:
    """The report keeps its files; the upload's own copy (data and state) goes."""
    retention = 3600
    config = write_config(tmp_path / "config.toml", finished_upload_retention=retention)
    server = LiveServer(data_dir, config=config).start()
    try:
        old_metadata = report_metadata(filename="old.txt")
        old = new_upload(server, 4, metadata=old_metadata)
        assert patch(old, 0, b"old!").status_code == 204
        refused = new_upload(server, 3, metadata=report_metadata(filename="r.txt", sha256="0" * 64))
        assert patch(refused, 0, b"bad").status_code == 422
        recent = new_upload(server, 6, metadata=report_metadata(filename="recent.txt"))
        assert patch(recent, 0, b"recent").status_code == 204
        unfinished = new_upload(server, 10, metadata=report_metadata(filename="u.txt"))
        assert patch(unfinished, 0, b"abc").status_code == 204
        # The last byte of two of them arrived longer ago than the retention.
        past = time.time() - retention - 60
        for url in (old, refused):
            os.utime(data_file(server, url), (past, past))

        listed = cleanup(server, "--dry-run")
        assert (
            f"would remove finished upload {named(old, 'old.txt')}: past retention, 4 bytes, "
            "published\n" in listed
        )
        assert data_file(server, old).exists()

        output = cleanup(server)
        assert (
            f"removed finished upload {named(old, 'old.txt')}: past retention, 4 bytes, published"
            in (output)
        )
        assert (
            f"removed finished upload {named(refused, 'r.txt')}: past retention, 3 bytes, refused"
            in output
        )
        assert "2 finished uploads past retention" in output
        for url in (old, refused):
            assert head(url).status_code == 404
            assert not data_file(server, url).exists()
            assert not data_file(server, url).with_suffix(".done").exists()
        # The report and the records are untouched.
        assert published(server, old_metadata).read_bytes() == b"old!"
        assert record(server, old)["state"] == "published"
        assert record(server, refused)["state"] == "failed"
        for url, offset in ((recent, 6), (unfinished, 3)):
            assert offset_of(url) == offset and data_file(server, url).exists()
        assert "0 finished uploads past retention" in cleanup(server)
    finally:
        server.discard()


DOCUMENTED = [
    Path(__file__).resolve().parents[1] / "docs" / "operators" / page
    for page in ("commands.md", "maintenance.md")
]


def shape(line: str) -> str:
    """A line of ``cleanup`` without what differs from run to run: ids, the
    report an upload carries, numbers, paths."""
    line = re.sub(r"\b[0-9a-f]{32}\b", "<id>", line)
    line = re.sub(r"\(project [^)]*\)", "(<report>)", line)
    line = re.sub(r"(staging directory) \S+", r"\1 <path>", line)
    return re.sub(r"\b\d+\b", "<n>", line)


def documented_cleanup(page: Path) -> list[str]:
    block = re.search(r"```console\n\$ dqrxfer-server cleanup\n(.*?)```", page.read_text(), re.S)
    assert block is not None, f"{page}: no example of 'dqrxfer-server cleanup'"
    return block[1].splitlines()


def test_the_documented_cleanup_output_is_what_cleanup_prints(
    tmp_path: Path, data_dir: Path
) -> None:
    """One upload of each kind the documented example shows, so its lines
    (and the summary) have the shape of a real run's, one for one."""
    config = write_config(
        tmp_path / "config.toml", upload_expiry=EXPIRY, finished_upload_retention=3600
    )
    server = LiveServer(data_dir, config=config).start()
    try:
        stale = new_upload(server, 10)
        assert patch(stale, 0, b"abc").status_code == 204
        joined_metadata = report_metadata("joined.bin")
        joined = new_upload(
            server, 4, metadata=joined_metadata, headers={"Upload-Concat": "partial"}
        )
        assert patch(joined, 0, b"join").status_code == 204
        assert create_final(server, [joined], metadata=joined_metadata).status_code == 201
        old = new_upload(server, 4)
        assert patch(old, 0, b"old!").status_code == 204
        interrupted = new_upload(server, 6)
        assert patch(interrupted, 0, b"abc").status_code == 204
        for url in (stale, joined):
            wait_for(lambda url=url: head(url).status_code == 410, what=f"{url} to expire")
    finally:
        server.stop()
    with open(data_file(server, interrupted), "ab") as handle:
        handle.write(b"def")  # the last bytes arrived, then the server died
    past = time.time() - 3600 - 60
    os.utime(data_file(server, old), (past, past))
    work = data_dir / "reports" / "O4" / ".dqrxfer-staging" / "work"
    (work / "abc.111111").mkdir(parents=True)
    (work / "abc.111111.lock").touch()  # nobody holds it: its finalization died

    real = [shape(line) for line in cleanup(server).splitlines()]

    for page in DOCUMENTED:
        assert [shape(line) for line in documented_cleanup(page)] == real, page


def test_an_interrupted_upload_refused_when_cleanup_finishes_it_is_logged_as_refused(
    tmp_path: Path, data_dir: Path
) -> None:
    """The last bytes of an upload arrived, then the server died; its bytes
    are not what its sha256 says.  ``cleanup`` finishes it: the report's
    refusal is its outcome, said as such (not "not recovered now"), and
    nothing is published."""
    config = write_config(tmp_path / "config.toml", upload_expiry=3600)
    metadata = report_metadata("wrong.txt", sha256="0" * 64)
    server, url = cut_before_finishing(data_dir, config, metadata)
    result = run_cli(
        "dqrxfer-server", "cleanup", "--config", str(config), "--data-dir", str(data_dir)
    )
    assert result.returncode == 0, result.stderr
    upload = upload_id(url)
    assert re.search(
        rf"upload {upload} finished after an interruption: refused \(4\d\d\): sha256: ",
        result.stderr,
    ), result.stderr
    assert "not recovered now" not in result.stderr
    assert re.search(rf"finished interrupted upload {upload} \(.*\): refused", result.stdout), (
        result.stdout
    )
    assert not published(server, metadata).exists()
    with sqlite3.connect(data_dir / "dqrxfer.sqlite") as database:
        ((state, error),) = database.execute(
            "SELECT state, error FROM uploads WHERE id = ?", (upload,)
        ).fetchall()
    assert state == "failed" and error.startswith("sha256: "), (state, error)
