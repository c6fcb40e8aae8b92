"""One writer per upload across gunicorn workers and server processes: a
server with four workers and a second server on the same data directory and
database take concurrent PATCHes to one upload (without take-over of a
silent holder: the writers hold their bodies back).  Exactly one wins each round,
the others wait for the lock and are then told the offset moved (409), and
the stored bytes never interleave.  With SQLite (file locks) and PostgreSQL
(advisory locks).  The metrics of all workers add up."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from support.live import LiveServer
from support.tus import (
    RawPatch,
    data_file,
    head,
    new_upload,
    published,
    record,
    report_metadata,
    upload_id,
    wait_for,
    write_config,
)

CHUNK = 256 * 1024
ROUNDS = 4
WRITERS = 6
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def scrape(server: LiveServer) -> dict[tuple[str, str], float]:
    response = requests.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200, (response.status_code, response.text[:200])
    text = response.text
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, sample.labels.get("status", ""))
            if sample.name != "dqrxfer_tus_requests_total" or sample.labels["method"] == "PATCH":
                values[key] = values.get(key, 0.0) + sample.value
    return values


def in_handler(servers: list[LiveServer]) -> int:
    """Requests writing to an upload or waiting for its lock, on every server."""
    total = 0.0
    for server in servers:
        values = scrape(server)
        total += values.get(("dqrxfer_tus_uploads_open", ""), 0.0)
        total += values.get(("dqrxfer_tus_lock_waiters", ""), 0.0)
    return int(total)


def patch_count(servers: list[LiveServer], status: str) -> int:
    return int(sum(scrape(s).get(("dqrxfer_tus_requests_total", status), 0.0) for s in servers))


def write_once(url: str, offset: int, letter: int, go: threading.Event) -> tuple[int, int]:
    """One PATCH of a chunk of ``letter`` bytes: the headers at once, the
    body when every writer of the round is inside the server."""
    body = bytes([letter]) * CHUNK
    raw = RawPatch(url, offset, CHUNK)
    try:
        assert go.wait(timeout=120)
        raw.send(body)
        status, _ = raw.response()
    finally:
        raw.close()
    return letter, status


@pytest.mark.parametrize("database", DATABASES)
def test_concurrent_patches_to_one_upload_never_interleave(
    request: pytest.FixtureRequest, database: str, tmp_path: Path, data_dir: Path
) -> None:
    # The writers hold their bodies back until all are in: silent holders,
    # which take-over would end (tests/test_tus_takeover.py); here they wait.
    keys: dict[str, object] = {"lock_timeout": 60, "lock_take_over": False}
    if database == "postgresql":
        keys["database_url"] = request.getfixturevalue("postgres_url")
    config = write_config(tmp_path / "config.toml", **keys)
    first = LiveServer(data_dir, config=config, workers=4).start()
    request.addfinalizer(first.stop)
    second = LiveServer(data_dir, config=config, workers=1).start()
    request.addfinalizer(second.stop)

    metadata = report_metadata()
    url = new_upload(first, CHUNK * ROUNDS, metadata=metadata)
    ident = upload_id(url)
    servers = [first, second]
    targets = [f"{server.url}/files/{ident}" for server in servers]
    before = {status: patch_count(servers, status) for status in ("204", "409", "423")}

    winners = []
    with ThreadPoolExecutor(WRITERS) as pool:
        for round_number in range(ROUNDS):
            offset = round_number * CHUNK
            go = threading.Event()
            futures = [
                pool.submit(
                    write_once,
                    targets[i % 2],
                    offset,
                    ord("a") + round_number * WRITERS + i,
                    go,
                )
                for i in range(WRITERS)
            ]
            # Every writer has passed its checks and holds or awaits the lock
            # before any body byte is sent: without one writer per upload, all
            # would write at the same offset.
            wait_for(lambda: in_handler(servers) == WRITERS, what="all writers in the server")
            go.set()
            results = [future.result(timeout=300) for future in futures]
            statuses = Counter(status for _, status in results)
            assert statuses == {204: 1, 409: WRITERS - 1}, statuses
            winners.extend(letter for letter, status in results if status == 204)

    expected = b"".join(bytes([letter]) * CHUNK for letter in winners)
    assert head(url).headers["Upload-Offset"] == str(CHUNK * ROUNDS)
    assert data_file(first, url).read_bytes() == expected
    assert published(first, metadata).read_bytes() == expected
    assert record(first, url)["state"] == "published"

    after = {status: patch_count(servers, status) for status in ("204", "409", "423")}
    assert after["204"] - before["204"] == ROUNDS
    assert after["423"] == before["423"]
    assert after["409"] - before["409"] == ROUNDS * (WRITERS - 1)
    assert in_handler(servers) == 0
