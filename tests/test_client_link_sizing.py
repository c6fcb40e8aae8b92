"""dqr-upload sizes its PATCHes by the link it measures (issue: time to visible):
the same payload over two links of the same round trip and different rates
goes in pieces that follow the rate, as the server's access log shows.  Not
timed: the times are ``bench/link_bench.py``'s job."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dqrxfer.pieces import ROUND_TRIPS
from support.cli import run_cli
from support.faultproxy import FaultProxy, Faults
from support.live import LiveServer
from support.request_log import requests_of
from support.tus import dqr_upload_command

MiB = 1024 * 1024
MB = 1_000_000
CHUNK = 8 * MiB
#: 80 ms round trip.
ONE_WAY = 0.04


#: A ``dqr-upload -v`` line announcing a PATCH, with what the client knew of
#: the link when it sized it.
PATCH_LINE = re.compile(
    r"PATCH (?P<length>\d+) bytes at offset (?P<offset>\d+)"
    r"(?: \(link: round trip (?P<rtt>[\d.]+) ms(?:, rate (?P<rate>[\d.]+) MB/s)?\))?"
)


@dataclass(frozen=True)
class Piece:
    length: int
    offset: int
    #: what the client had measured of the link when it sized the piece
    round_trip: float | None
    rate: float | None

    def link_size(self) -> int | None:
        """What the link carries in ``ROUND_TRIPS`` round trips as measured,
        to the nearest whole chunk (None: not measured yet)."""
        if self.round_trip is None or self.rate is None:
            return None
        return round(self.rate * self.round_trip * ROUND_TRIPS / CHUNK) * CHUNK


def patches(
    server: LiveServer, payload: Path, env: dict[str, str], rate: float, revision: int
) -> list[Piece]:
    """The PATCHes of one ``dqr-upload -v --no-checksum --parallel 1`` of ``payload`` over
    an 80 ms link capped at ``rate`` bytes/s, as the client announced them;
    the server's access log must show the same bodies, all accepted."""
    before = len(requests_of(server.log()))
    with FaultProxy(server.port, Faults(delay=ONE_WAY, rate=rate)) as proxy:
        command = dqr_upload_command(
            proxy.url, "-v", "--no-checksum", "--parallel", "1", str(payload), revision=revision
        )
        result = run_cli(*command, env=env)
    assert result.returncode == 0, result.stderr
    pieces = [
        Piece(
            int(match["length"]),
            int(match["offset"]),
            float(match["rtt"]) / 1000 if match["rtt"] else None,
            float(match["rate"]) * MB if match["rate"] else None,
        )
        for match in PATCH_LINE.finditer(result.stderr)
    ]
    requests = requests_of(server.log())[before:]
    accepted = [r.length or 0 for r in requests if r.method == "PATCH" and r.status == 204]
    assert accepted == [piece.length for piece in pieces], (accepted, result.stderr)
    assert sum(accepted) == payload.stat().st_size
    return pieces


def test_piece_sizes_follow_the_links_measured_rate(
    logged_server: LiveServer,
    big_file: Path,
    client_env: dict[str, str],
) -> None:
    """At 80 ms a piece carries what the link does in 32 round trips as the
    client measured it: about 8 MB at 3 MB/s (one chunk), the whole rest
    of the 64 MiB payload at 40 MB/s.  The expectations follow the round
    trips and rates the client measured: a busy machine measures less than
    the proxy's cap, and round trips longer than the link's (its answers
    wait for a core at both ends: 0.26 s and 0.55 s were seen on two cores
    running the suite, for this 80 ms link)."""
    size = big_file.stat().st_size
    # 3 MB/s: even a round trip measured at seven times the link's keeps
    # the slow link's size below what is left after the first chunk, so
    # the slow upload still goes in several pieces.
    slow = patches(logged_server, big_file, client_env, 3 * MB, revision=1)
    fast = patches(logged_server, big_file, client_env, 40 * MB, revision=2)
    for run in (slow, fast):
        # The first piece goes before the rate is known: one chunk.
        assert run[0].length == CHUNK and run[0].rate is None, run
        for piece in run[1:]:
            link_size = piece.link_size()
            assert link_size is not None, run  # measured after the first answer
            rest = size - piece.offset
            # A piece carries the link's size or the whole rest (the held-back
            # tail goes with the last one once the final upload exists).
            assert piece.length >= min(link_size, rest), (piece, run)
            if link_size >= rest:
                assert piece.length == rest, (piece, run)
    # The pieces follow the rate: the slow link's size is a few chunks,
    # below what is left after the first one, so the payload takes several
    # pieces of about that size; the fast link's pieces are larger and fewer.
    slow_size = slow[1].link_size()
    assert slow_size is not None and slow_size < size - CHUNK, slow
    assert len(slow) >= 3 and slow[1].length <= max(slow_size, 2 * CHUNK), slow
    assert fast[1].rate is not None and slow[1].rate is not None
    assert fast[1].rate > 1.5 * slow[1].rate, (fast, slow)
    assert len(fast) < len(slow) and fast[1].length > slow[1].length, (fast, slow)
