"""A request whose body fell silent (a link gone dark: no FIN, no RST, just
nothing) lets go of its upload when another request asks: the lockers carry
the request across processes (a lock on a second file byte, a shared advisory
lock on a second key), the silent request keeps what it stored (whole verified
blocks only) and answers 400, and the client's HEAD and PATCH on a new
connection, to another server process, go on at once instead of after the
server's ``read_timeout``.  A holder whose body still arrives is not
interrupted.  With SQLite (file locks) and PostgreSQL (advisory locks)."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine
from test_client_transfers import FAST_RETRIES, upload_command
from test_tus_block_checksum import block_header

from dqrxfer.server.tus import errors
from dqrxfer.server.tus.locker import FileLocker, Locker
from dqrxfer.server.tus.pglocker import PostgresLocker
from support.cli import run_cli
from support.faultproxy import FaultProxy, Faults
from support.live import LiveServer
from support.tus import (
    RawPatch,
    data_file,
    head,
    module_config,
    new_upload,
    patch,
    patch_partly,
    published,
    report_metadata,
    wait_for,
    write_config,
)

MiB = 1024 * 1024
#: Long, so that only a take-over can explain an answer within the test.
READ_TIMEOUT = 120
LOCK_TIMEOUT = 10
#: What "at once" allows here, on a loaded machine: far below either timeout.
PROMPTLY = 8.0


# -- the lockers -----------------------------------------------------------------


def check_take_over(locker: Locker) -> None:
    """A plain waiter does not ask; a waiter taking over does, for as long as
    it waits, and gets the lock once the holder lets go; other uploads' holders
    are not asked."""
    upload_id, other_id = "d" * 32, "e" * 32
    with locker.lock(upload_id) as hold, locker.lock(other_id) as other:
        assert not hold.release_requested()
        with pytest.raises(errors.TusError) as busy, locker.lock(upload_id, timeout=0.2):
            pass
        assert busy.value.status == 423
        assert not hold.release_requested()

        got: list[bool] = []

        def waiter() -> None:
            with locker.lock(upload_id, timeout=60, take_over=True) as mine:
                got.append(mine.release_requested())

        thread = threading.Thread(target=waiter)
        thread.start()
        wait_for(hold.release_requested, what="the waiter's request")
        assert not other.release_requested()
    thread.join(timeout=60)
    assert got == [False]  # its own request ended when it got the lock
    with locker.lock(upload_id, timeout=0) as hold:
        assert not hold.release_requested()


def test_file_locker_carries_a_take_over_request_to_the_holder(tmp_path: Path) -> None:
    check_take_over(FileLocker(tmp_path, timeout=5))


@pytest.mark.postgres
def test_postgres_locker_carries_a_take_over_request_to_the_holder(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    locker = PostgresLocker(engine, timeout=5)
    try:
        check_take_over(locker)
    finally:
        locker.dispose()
        engine.dispose()


# -- live servers: another process takes over ----------------------------------


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two servers on one data directory and database: the silent request
    goes to the first, the client's next requests to the second."""
    root = tmp_path_factory.mktemp("tus-takeover")
    data = root / "data"
    data.mkdir()
    config = module_config(request, root, lock_timeout=LOCK_TIMEOUT, read_timeout=READ_TIMEOUT)
    first = LiveServer(data, config=config, workers=4).start()
    second = LiveServer(data, config=config, workers=2).start()
    yield first, second
    second.stop()
    first.discard()


def taken_over(server: LiveServer) -> float:
    """``dqrxfer_tus_taken_over_total`` over the server's workers."""
    text = requests.get(f"{server.url}/metrics", timeout=60).text
    found = re.search(r"^dqrxfer_tus_taken_over_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def on(server: LiveServer, url: str) -> str:
    return f"{server.url}/files/{url.rsplit('/', 1)[-1]}"


@pytest.mark.parametrize("ask_first", [True, False], ids=["head-then-patch", "patch-alone"])
def test_a_silent_patch_is_taken_over_from_another_server(
    servers: tuple[LiveServer, LiveServer], ask_first: bool
) -> None:
    first, second = servers
    metadata = report_metadata()
    payload = os.urandom(1 * MiB)
    url = new_upload(first, len(payload), metadata=metadata)
    counted = taken_over(first)
    raw = patch_partly(first, url, 0, payload, until=400_000)
    try:
        # The client's socket stays open and sends nothing, as over a dark link.
        started = time.monotonic()
        if ask_first:
            assert head(on(second, url)).headers["Upload-Offset"] == "400000"
            status, _ = raw.response()  # the silent request was ended by the HEAD
            assert status == 400
            with contextlib.suppress(OSError):  # too late: nobody reads it any more
                raw.send(b"x" * 100_000)
        response = patch(on(second, url), 400_000, payload[400_000:])
        took = time.monotonic() - started
        assert response.status_code == 204, response.text
        if not ask_first:
            assert raw.response()[0] == 400
    finally:
        raw.close()
    assert took < PROMPTLY, f"took {took:.1f} s (lock_timeout {LOCK_TIMEOUT}, read_timeout 120)"
    assert published(first, metadata).read_bytes() == payload
    assert taken_over(first) == counted + 1


def test_a_silent_block_checksummed_patch_keeps_its_whole_verified_blocks(
    servers: tuple[LiveServer, LiveServer],
) -> None:
    first, second = servers
    block = 256 * 1024
    metadata = report_metadata()
    payload = os.urandom(4 * block)
    url = new_upload(first, len(payload), metadata=metadata)
    raw = RawPatch(
        url, 0, len(payload), headers={"Upload-Block-Checksum": block_header(payload, block)}
    )
    try:
        raw.send(payload[: 2 * block + block // 2])  # two blocks and half of the third
        wait_for(lambda: data_file(first, url).stat().st_size == 2 * block, what="two blocks")
        assert head(on(second, url)).headers["Upload-Offset"] == str(2 * block)
        assert raw.response()[0] == 400
    finally:
        raw.close()
    assert data_file(first, url).stat().st_size == 2 * block  # the half block is not kept
    rest = payload[2 * block :]
    response = patch(
        on(second, url), 2 * block, rest, {"Upload-Block-Checksum": block_header(rest, block)}
    )
    assert response.status_code == 204, response.text
    assert published(first, metadata).read_bytes() == payload


def test_a_writer_whose_body_arrives_is_not_interrupted(
    servers: tuple[LiveServer, LiveServer],
) -> None:
    """HEAD while the body streams: answered (within the wait it allows a
    holder), and the writer goes on to 204."""
    first, second = servers
    metadata = report_metadata()
    payload = os.urandom(64 * MiB)
    url = new_upload(first, len(payload), metadata=metadata)
    raw = RawPatch(url, 0, len(payload))
    sent = threading.Event()
    failure: list[BaseException] = []

    def send() -> None:
        try:
            view = memoryview(payload)
            for start in range(0, len(payload), 64 * 1024):
                raw.send(view[start : start + 64 * 1024])
        except BaseException as error:  # reported below
            failure.append(error)
        finally:
            sent.set()

    sender = threading.Thread(target=send)
    try:
        # Slow the body down to the server's writes: a 64 MiB body over
        # loopback takes long enough for a HEAD in the middle.
        sender.start()
        wait_for(lambda: data_file(first, url).stat().st_size > 0, what="the first bytes")
        offset = int(head(on(second, url)).headers["Upload-Offset"])
        assert 0 < offset <= len(payload)
        sender.join(timeout=120)
        assert not failure, failure
        status, _ = raw.response()
    finally:
        raw.close()
    assert status == 204
    assert published(first, metadata).read_bytes() == payload


# -- dqr-upload over a link that goes dark -----------------------------------------


def test_dqr_upload_resumes_at_once_after_its_link_goes_dark(
    tmp_path: Path, data_dir: Path
) -> None:
    """The connection carrying the PATCH goes dark 6 MiB in (the proxy stops
    forwarding and closes nothing); the client gives up on it after its send
    timeout (3 s), reconnects, and the server lets the silent request go: the
    upload completes intact long before the server's read_timeout."""
    config = write_config(tmp_path / "server.toml", read_timeout=READ_TIMEOUT)
    server = LiveServer(data_dir, config=config, workers=4).start()
    payload = tmp_path / "report.bin"
    content = os.urandom(24 * MiB)
    payload.write_bytes(content)
    faults = Faults(
        stall_probability=1.0,
        stall_after=(6 * MiB, 6 * MiB),
        stall_seconds=600,
        max_stalls=1,
        rate=20e6,
    )
    try:
        with FaultProxy(server.port, faults) as proxy:
            started = time.monotonic()
            result = run_cli(
                *upload_command(proxy.url, payload, connect_timeout="3", **FAST_RETRIES),
                timeout=READ_TIMEOUT,
            )
            took = time.monotonic() - started
            assert result.returncode == 0, result.stderr
            assert proxy.counters.stalls == 1
    finally:
        server.discard()
    assert server.published("report.bin").read_bytes() == content
    # 3 s to notice the dark link, the rest at the link's rate: well below
    # the 120 s the server would otherwise hold the upload's lock.
    assert took < READ_TIMEOUT / 3, f"{took:.1f} s"
