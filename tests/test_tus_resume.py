"""Broken and stalled connections against a live server: received bytes are
kept (a checksummed chunk: all or nothing), the upload's lock is released
when the client vanishes, and a second writer waits, then gets 423.  With
SQLite (file locks) and PostgreSQL (advisory locks)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from support.live import LiveServer
from support.tus import (
    RawPatch,
    data_file,
    head,
    new_upload,
    offset_of,
    patch,
    patch_partly,
    patch_until_unlocked,
    published,
    report_metadata,
    sha1_header,
    wait_for,
    write_config,
)

LOCK_TIMEOUT = 1
READ_TIMEOUT = 8


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("tus-resume")
    data = root / "data"
    data.mkdir()
    keys: dict[str, object] = {"lock_timeout": LOCK_TIMEOUT, "read_timeout": READ_TIMEOUT}
    if request.param == "postgresql":
        keys["database_url"] = request.getfixturevalue("module_postgres_url")
    live = LiveServer(data, config=write_config(root / "config.toml", **keys)).start()
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


def test_second_writer_waits_then_gets_423_and_goes_on_once_the_first_vanishes(
    server: LiveServer,
) -> None:
    metadata = report_metadata()
    payload = os.urandom(1024 * 1024)
    url = new_upload(server, len(payload), metadata=metadata)
    raw = patch_partly(server, url, 0, payload, until=300_000)

    # The first writer holds the lock (its body is unfinished): HEAD still answers.
    assert offset_of(url) == 300_000
    started = time.monotonic()
    response = patch(url, 300_000, payload[300_000:])
    waited = time.monotonic() - started
    assert response.status_code == 423
    assert "upload is busy" in response.text
    assert waited >= LOCK_TIMEOUT * 0.9

    raw.drop()
    response = patch_until_unlocked(url, 300_000, payload[300_000:])
    assert response.status_code == 204, response.text
    assert published(server, metadata).read_bytes() == payload


def test_stalled_client_loses_the_lock_after_the_read_timeout(server: LiveServer) -> None:
    metadata = report_metadata()
    payload = os.urandom(1024 * 1024)
    url = new_upload(server, len(payload), metadata=metadata)
    raw = RawPatch(url, 0, len(payload))
    try:
        raw.send(payload[:400_000])
        wait_for(lambda: data_file(server, url).stat().st_size == 400_000, what="bytes on disk")
        # The client neither sends nor closes.  Within the read timeout the
        # server gives up on it, keeps its bytes and frees the upload.
        response = patch_until_unlocked(url, 400_000, payload[400_000:])
        assert response.status_code == 204, response.text
        assert published(server, metadata).read_bytes() == payload
        status, _ = raw.response()
        assert status == 400  # what the stalled client is told, should it listen
    finally:
        raw.close()
    assert head(url).headers["Upload-Offset"] == str(len(payload))
