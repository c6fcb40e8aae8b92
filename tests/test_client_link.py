"""dqr-upload over a long link (issue: time to visible): what a reset in the
middle of a piece costs, seen from both ends: the fault proxy counts the bytes
the client put on the wire, and the server's access log
(``support/request_log.py``) names every request with its offsets.  Against
our server a PATCH carries block checksums (a reset keeps the whole blocks
received); against a server without that extension, whole-piece checksums.
Not timed: the times are ``bench/link_bench.py``'s job."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dqrxfer.blocks import PreparedHeaders, block_checksum, block_size
from dqrxfer.payload import payload_for
from support.cli import run_cli
from support.faultproxy import FaultProxy, Faults
from support.live import LiveServer
from support.request_log import Request, requests_of
from support.tus import dqr_upload_command

MiB = 1024 * 1024
MB = 1_000_000
#: A link of 80 ms round trip, each connection capped at 40 MB/s.
ONE_WAY = 0.04
RATE = 40 * MB
#: The link resets once, 40 MiB into the 64 MiB payload (the next reset
#: would fall 40 MiB later: only a client that re-sends more than 16 MiB sees it).
RESET_AT = 40 * MiB
#: Request line and headers of one request, at most (HTTP's share of the wire).
HEADERS = 2048


@pytest.fixture
def standard_server(data_dir: Path) -> Iterator[LiveServer]:
    """The same, answering as a tus server without block checksums."""
    config = Path(__file__).parent / "support" / "request_log_hiding.py"
    server = LiveServer(
        data_dir,
        extra_args=["--gunicorn-config", str(config)],
        env={"DQRXFER_TEST_HIDDEN_EXTENSIONS": "block-checksum"},
    ).start()
    yield server
    server.stop()


def whole(request: Request) -> bool:
    """A PATCH (or a creation carrying data) that the server took entirely."""
    return (
        request.status in (201, 204)
        and request.answer is not None
        and request.length is not None
        and request.answer == (request.offset or 0) + request.length
        and request.length > 0
    )


def upload_through_a_link_that_resets_once(
    server: LiveServer, payload: Path, env: dict[str, str], *options: str
) -> tuple[int, list[Request]]:
    """``dqr-upload`` of ``payload`` over an 80 ms link that resets once;
    the bytes the client put on the wire beyond the payload, and the
    server's requests."""
    faults = Faults(delay=ONE_WAY, rate=RATE, cut_link_every=(RESET_AT, RESET_AT))
    with FaultProxy(server.port, faults) as proxy:
        command = dqr_upload_command(proxy.url, "--retry-wait", "0.05", *options, str(payload))
        result = run_cli(*command, env=env)
        counters = proxy.counters
    assert result.returncode == 0, result.stderr
    assert counters.cuts == 1, counters  # the link did reset, once
    assert server.published(payload.name).stat().st_size == payload.stat().st_size
    return counters.up_bytes - payload.stat().st_size, requests_of(server.log())


def the_one_head(requests: list[Request]) -> Request:
    heads = [request for request in requests if request.method == "HEAD"]
    assert len(heads) == 1, heads  # one question after the reset, nothing more
    assert heads[0].status == 200 and heads[0].answer is not None, heads[0]
    return heads[0]


def resumed_after_the_cut_piece(requests: list[Request], head: Request) -> int:
    """Check that the upload that was cut resumed where the server stood and
    that nothing before the cut piece went again; return where the cut piece
    began (where the last piece the server took whole ended)."""
    position = requests.index(head)
    same_upload = [(index, r) for index, r in enumerate(requests) if r.path == head.path]
    before = [r for index, r in same_upload if index < position and whole(r)]
    after = [r for index, r in same_upload if index > position and r.method == "PATCH"]
    cut_piece_start = before[-1].answer if before else 0
    assert cut_piece_start is not None and head.answer is not None
    assert after and after[0].offset == head.answer, (before[-3:], after[:3])
    assert head.answer >= cut_piece_start, (before[-3:], head)
    return cut_piece_start


def test_a_reset_mid_piece_on_a_long_link_resumes_with_one_head_and_resends_only_the_cut_piece(
    logged_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    resent, requests = upload_through_a_link_that_resets_once(logged_server, big_file, client_env)
    cut_piece_start = resumed_after_the_cut_piece(requests, the_one_head(requests))
    # One stream: the reset fell RESET_AT bytes into the payload (less the
    # headers before it), so the cut piece had sent at most this much.
    allowance = RESET_AT - cut_piece_start + HEADERS * len(requests)
    assert resent <= allowance, (resent, allowance)


def test_parallel_streams_each_resume_on_their_own(
    logged_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    """With ``--parallel 4`` the reset cuts one stream: that stream alone asks
    where it stands and resumes; the others never send a byte twice."""
    resent, requests = upload_through_a_link_that_resets_once(
        logged_server, big_file, client_env, "--parallel", "4"
    )
    head = the_one_head(requests)
    resumed_after_the_cut_piece(requests, head)
    # The cut piece is at most twice the last whole one before it (pieces
    # at most double); nothing else went twice.
    pieces = [r.length or 0 for r in requests if r.path == head.path and r.method == "PATCH"]
    allowance = 2 * max(pieces) + HEADERS * len(requests)
    assert resent <= allowance, (resent, allowance)
    patched = {r.path for r in requests if r.method == "PATCH" and r.path != head.path}
    assert len(patched) >= 3, patched  # the other streams (and the final upload)
    for path in patched:
        requests_here = [r for r in requests if r.path == path and r.method == "PATCH"]
        for earlier, later in itertools.pairwise(requests_here):
            assert later.offset == earlier.answer, (path, earlier, later)


def the_cut_patch(requests: list[Request], head: Request) -> Request:
    """The PATCH the reset cut: the last one of the upload before the HEAD."""
    before = requests[: requests.index(head)]
    patches = [r for r in before if r.path == head.path and r.method == "PATCH"]
    assert patches and not whole(patches[-1]), patches[-3:]
    return patches[-1]


def test_a_reset_keeps_the_whole_verified_blocks_of_a_large_patch(
    logged_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    """Against our server the payload goes in one PATCH (but the held-back
    tail) with block checksums; the reset 40 MiB in keeps every whole block
    received: the server's offset is a block boundary of the cut PATCH,
    and only the bytes in flight and the block cut in two go again."""
    resent, requests = upload_through_a_link_that_resets_once(logged_server, big_file, client_env)
    head = the_one_head(requests)
    cut = the_cut_patch(requests, head)
    size = big_file.stat().st_size
    assert cut.offset == 0 and cut.length is not None and cut.length > size - 1024 * 1024, cut
    assert head.answer is not None and cut.offset is not None
    kept = head.answer - cut.offset
    block = block_size("crc32", cut.length)  # the blocks of the cut PATCH
    assert kept > 0 and kept % block == 0, (cut, head, block)
    assert kept > RESET_AT - Faults().window - block - HEADERS, (kept, RESET_AT)
    patches = [r for r in requests if r.method == "PATCH"]
    assert len(patches) <= 4, patches  # the cut one, the rest, the held-back tail
    # What went again: the bytes in flight on the link (at most its window)
    # and the block the reset cut in two.
    assert resent <= Faults().window + block + HEADERS * len(requests), (resent, kept)


def test_a_server_without_block_checksums_gets_whole_piece_checksums(
    standard_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    """Without the extension a cut checksummed piece is discarded whole: the
    server's offset after the reset is where the cut piece began, and the
    pieces are the sizer's, many of them."""
    resent, requests = upload_through_a_link_that_resets_once(standard_server, big_file, client_env)
    head = the_one_head(requests)
    cut = the_cut_patch(requests, head)
    assert head.answer == cut.offset, (cut, head)
    patches = [r for r in requests if r.method == "PATCH"]
    assert len(patches) > 4, patches
    assert resent > 0


def test_block_checksums_computed_ahead_are_those_of_the_bytes_sent(tmp_path: Path) -> None:
    """The first PATCH's header, computed while the upload is created, is
    the one computed on the spot; a range not prepared is computed then."""
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    payload = payload_for(path)
    prepared = PreparedHeaders()
    prepared.prepare(payload, "crc32", 0, payload.size)
    assert prepared.get(payload, "crc32", 0, payload.size) == (
        block_checksum(payload, "crc32", 0, payload.size)
    )
    assert prepared.get(payload, "crc32", 1024, payload.size) == (
        block_checksum(payload, "crc32", 1024, payload.size)
    )
