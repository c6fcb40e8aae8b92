"""Least privilege on disk: what a front end serving the report trees must not
read (uploads in progress, the database) is the server user's alone, while
published reports stay readable by the web server."""

from __future__ import annotations

import stat
from pathlib import Path

from support.live import LiveServer
from support.tus import send, tar_metadata


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_uploads_and_database_are_private_and_reports_are_readable(
    live_server: LiveServer,
) -> None:
    sent = send(
        live_server.url, b"<html>report</html>", tar_metadata(filename="index.html", kind="file")
    )
    assert sent.final.status_code == 204, sent.final.text

    data = live_server.data_dir
    assert mode(data / "uploads") & 0o077 == 0
    database_files = sorted(data.glob("dqrxfer.sqlite*"))
    assert database_files, "the embedded default keeps its SQLite database in the data directory"
    for path in database_files:
        assert mode(path) & 0o077 == 0, path.name
    published = live_server.published("index.html")
    assert mode(published) == 0o644
    assert mode(published.parent) == 0o755
