"""dqr-upload over a long link (issue: time to visible): what a reset in the
middle of a piece costs, seen from both ends: the fault proxy counts the bytes
the client put on the wire, and the server's access log
(``support/request_log.py``) names every request with its offsets.  Not timed:
the times are ``bench/link_bench.py``'s job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli
from support.faultproxy import FaultProxy, Faults
from support.live import LiveServer
from support.request_log import Request, requests_of
from support.uploads import dqr_upload_command

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
def logged_server(data_dir: Path) -> Iterator[LiveServer]:
    """The real server, each request in its access log with its tus offsets."""
    config = Path(__file__).parent / "support" / "request_log.py"
    server = LiveServer(data_dir, extra_args=["--gunicorn-config", str(config)]).start()
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


def test_a_reset_mid_piece_on_a_long_link_resumes_with_one_head_and_resends_only_the_cut_piece(
    logged_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    size = big_file.stat().st_size
    faults = Faults(delay=ONE_WAY, rate=RATE, cut_link_every=(RESET_AT, RESET_AT))
    with FaultProxy(logged_server.port, faults) as proxy:
        command = dqr_upload_command(proxy.url, "--retry-wait", "0.05", str(big_file))
        result = run_cli(*command, env=client_env)
        counters = proxy.counters
    assert result.returncode == 0, result.stderr
    assert counters.cuts == 1, counters  # the link did reset, once
    assert logged_server.published(big_file.name).stat().st_size == size

    requests = requests_of(logged_server.log())
    heads = [request for request in requests if request.method == "HEAD"]
    assert len(heads) == 1, heads  # one question after the reset, nothing more
    head = heads[0]
    assert head.status == 200 and head.answer is not None, head
    position = requests.index(head)
    same_upload = [request for request in requests if request.path == head.path]
    before = [r for r in same_upload if requests.index(r) < position and whole(r)]
    after = [r for r in same_upload if requests.index(r) > position and r.method == "PATCH"]
    # The cut piece began where the last piece the server took whole ended.
    cut_piece_start = before[-1].answer if before else 0
    assert cut_piece_start is not None
    assert after and after[0].offset == head.answer, after[:1]  # resumed where the server stood
    assert head.answer >= cut_piece_start  # nothing before the cut piece is sent again

    # Bytes the client put on the wire beyond the payload: at most what the
    # cut piece had sent before the reset (and the requests' headers).
    resent = counters.up_bytes - size
    allowance = RESET_AT - cut_piece_start + HEADERS * len(requests)
    assert resent <= allowance, (resent, allowance, cut_piece_start, before[-3:], after[:3])
