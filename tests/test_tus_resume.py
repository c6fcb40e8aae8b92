"""Broken and stalled connections against a live server: received bytes are
kept (a checksummed chunk: all or nothing), the upload's lock is released
when the client vanishes or, silent, after ``read_timeout``, and a second
writer waits for a holder that is not reading a body, then gets 423 (a
silent holder is taken over instead: tests/test_tus_takeover.py).  With
SQLite (file locks) and PostgreSQL (advisory locks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.live import LiveServer
from support.tus import (
    data_file,
    head,
    module_config,
    new_upload,
    offset_of,
    patch,
    patch_partly,
    patch_until_unlocked,
    published,
    report_metadata,
    sha1_header,
    upload_id,
)

LOCK_TIMEOUT = 1
READ_TIMEOUT = 8
HOLDER = Path(__file__).parent / "support" / "lock_holder.py"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("tus-resume")
    data = root / "data"
    data.mkdir()
    config = module_config(request, root, lock_timeout=LOCK_TIMEOUT, read_timeout=READ_TIMEOUT)
    live = LiveServer(data, config=config).start()
    yield live
    live.discard()


def test_dropped_connection_keeps_the_received_bytes(server: LiveServer) -> None:
    metadata = report_metadata()
    payload = os.urandom(3 * 1024 * 1024)
    url = new_upload(server, len(payload), metadata=metadata)
    raw = patch_partly(server, url, 0, payload, until=1_000_000)
    raw.drop()

    assert offset_of(url) == 1_000_000
    response = patch_until_unlocked(url, 1_000_000, payload[1_000_000:])
    assert response.status_code == 204, response.text
    assert published(server, metadata).read_bytes() == payload


def test_dropped_checksummed_chunk_is_discarded_whole(server: LiveServer) -> None:
    metadata = report_metadata()
    payload = os.urandom(2 * 1024 * 1024)
    url = new_upload(server, len(payload), metadata=metadata)
    assert patch(url, 0, payload[:100]).status_code == 204
    chunk = payload[100:]
    raw = patch_partly(
        server, url, 100, chunk, until=700_100, headers={"Upload-Checksum": sha1_header(chunk)}
    )
    assert offset_of(url) == 100  # not verified yet: not counted
    raw.drop()

    response = patch_until_unlocked(
        url, 100, chunk, headers={"Upload-Checksum": sha1_header(chunk)}
    )
    assert response.status_code == 204, response.text
    assert published(server, metadata).read_bytes() == payload
    assert not data_file(server, url).with_suffix(".pending").exists()


def test_second_writer_waits_for_a_holder_that_is_not_reading_then_gets_423(
    server: LiveServer,
) -> None:
    """A holder that reads no body (here another process holding the lock,
    as a request finishing an upload does) is not taken over: the second
    writer waits ``lock_timeout`` and gets 423, and goes on once it ends."""
    metadata = report_metadata()
    payload = os.urandom(1024 * 1024)
    url = new_upload(server, len(payload), metadata=metadata)
    assert patch(url, 0, payload[:300_000]).status_code == 204
    with lock_held_elsewhere(server, upload_id(url)):
        started = time.monotonic()
        response = patch(url, 300_000, payload[300_000:])
        waited = time.monotonic() - started
        assert response.status_code == 423
        assert "upload is busy" in response.text
        assert waited >= LOCK_TIMEOUT * 0.9
        assert offset_of(url) == 300_000  # HEAD answers all the same
    response = patch_until_unlocked(url, 300_000, payload[300_000:])
    assert response.status_code == 204, response.text
    assert published(server, metadata).read_bytes() == payload


def test_stalled_client_loses_the_lock_after_the_read_timeout(server: LiveServer) -> None:
    """Nobody asks for the upload: the silent request ends after ``read_timeout``."""
    metadata = report_metadata()
    payload = os.urandom(1024 * 1024)
    url = new_upload(server, len(payload), metadata=metadata)
    raw = patch_partly(server, url, 0, payload, until=400_000)
    silent = time.monotonic()
    try:
        # The client neither sends nor closes.  Within the read timeout the
        # server gives up on it, keeps its bytes and frees the upload.
        status, _ = raw.response()
        assert status == 400  # what the stalled client is told, should it listen
        assert time.monotonic() - silent >= READ_TIMEOUT * 0.9
    finally:
        raw.close()
    response = patch(url, 400_000, payload[400_000:])
    assert response.status_code == 204, response.text
    assert published(server, metadata).read_bytes() == payload
    assert head(url).headers["Upload-Offset"] == str(len(payload))


@contextmanager
def lock_held_elsewhere(server: LiveServer, upload: str) -> Iterator[None]:
    """The upload's lock held by another process with the server's locker."""
    assert server.config is not None
    config = server.config.with_name("holder.toml")
    config.write_text(server.config.read_text() + f'data_dir = "{server.data_dir}"\n')
    holder = subprocess.Popen(
        [sys.executable, str(HOLDER), str(config), upload],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
