"""kill -9 of the whole server (master and workers) in the middle of an
upload, then a restart on the same data: HEAD reports exactly the bytes kept,
the resume completes, the content is identical.  With SQLite (file locks) and
PostgreSQL (advisory locks, which die with the killed process's sessions)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from support.live import LiveServer
from support.tus import (
    data_file,
    head,
    new_upload,
    offset_of,
    patch,
    patch_partly,
    patch_until_unlocked,
    published,
    record,
    report_metadata,
    sha1_header,
    wait_for,
    write_config,
)

DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def server(request: pytest.FixtureRequest, tmp_path: Path, data_dir: Path) -> LiveServer:
    keys: dict[str, object] = {"lock_timeout": 2}
    if request.param == "postgresql":
        keys["database_url"] = request.getfixturevalue("postgres_url")
    config = write_config(tmp_path / "config.toml", **keys)
    live = LiveServer(data_dir, config=config).start()
    request.addfinalizer(live.stop)
    return live


def kill_and_restart(server: LiveServer) -> None:
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    server.start()  # same port, same data directory, same database


def test_kill_9_mid_upload_then_resume(server: LiveServer) -> None:
    metadata = report_metadata()
    payload = os.urandom(4 * 1024 * 1024)
    url = new_upload(server, len(payload), metadata=metadata)
    assert patch(url, 0, payload[:1000]).status_code == 204
    raw = patch_partly(server, url, 1000, payload[1000:], until=1_500_000)

    kill_and_restart(server)
    raw.close()

    info = head(url)
    assert info.status_code == 200
    assert info.headers["Upload-Offset"] == "1500000"
    assert info.headers["Upload-Length"] == str(len(payload))
    # The killed worker's lock is gone with it: the resume is not refused.
    response = patch_until_unlocked(url, 1_500_000, payload[1_500_000:])
    assert response.status_code == 204, response.text
    assert data_file(server, url).read_bytes() == payload
    assert published(server, metadata).read_bytes() == payload
    assert record(server, url)["state"] == "published"


def test_kill_9_mid_checksummed_chunk_keeps_nothing_of_it(server: LiveServer) -> None:
    metadata = report_metadata()
    payload = os.urandom(3 * 1024 * 1024)
    url = new_upload(server, len(payload), metadata=metadata)
    assert patch(url, 0, payload[:5000]).status_code == 204
    chunk = payload[5000:]
    checksum = {"Upload-Checksum": sha1_header(chunk)}
    raw = patch_partly(server, url, 5000, chunk, until=1_005_000, headers=checksum)

    kill_and_restart(server)
    raw.close()

    assert offset_of(url) == 5000  # the unverified bytes are in the file but not counted
    assert data_file(server, url).stat().st_size == 1_005_000
    response = patch_until_unlocked(url, 5000, chunk, headers=checksum)
    assert response.status_code == 204, response.text
    assert data_file(server, url).read_bytes() == payload
    assert published(server, metadata).read_bytes() == payload


def test_crash_between_last_byte_and_finalization_is_recovered(server: LiveServer) -> None:
    metadata = report_metadata()
    payload = os.urandom(100_000)
    url = new_upload(server, len(payload), metadata=metadata)
    assert patch(url, 0, payload[:60_000]).status_code == 204
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    # The last bytes reached the file; the server died before post_finish ran.
    with open(data_file(server, url), "ab") as handle:
        handle.write(payload[60_000:])
    assert not published(server, metadata).exists()
    server.start()

    # A client resuming finds the upload finished; the server finishes what the
    # crash interrupted (on that HEAD, or at start-up, whichever comes first).
    info = head(url)
    assert info.headers["Upload-Offset"] == str(len(payload))
    wait_for(lambda: record(server, url).get("state") == "published", what="publication")
    assert published(server, metadata).read_bytes() == payload
