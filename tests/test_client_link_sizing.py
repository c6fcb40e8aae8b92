"""dqr-upload sizes its PATCHes by the link it measures (issue: time to visible):
the same payload over two links of the same round trip and different rates
goes in pieces that follow the rate, as the server's access log shows.  Not
timed: the times are ``bench/link_bench.py``'s job."""

from __future__ import annotations

from pathlib import Path

from test_client_link import logged_server  # noqa: F401  (the fixture)

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


def patch_lengths(
    server: LiveServer, payload: Path, env: dict[str, str], rate: float, revision: int
) -> list[int]:
    """The PATCH bodies of one ``dqr-upload --no-checksum`` of ``payload``
    over an 80 ms link capped at ``rate`` bytes/s, as the server logged them."""
    before = len(requests_of(server.log()))
    with FaultProxy(server.port, Faults(delay=ONE_WAY, rate=rate)) as proxy:
        command = dqr_upload_command(proxy.url, "--no-checksum", str(payload), revision=revision)
        result = run_cli(*command, env=env)
    assert result.returncode == 0, result.stderr
    requests = requests_of(server.log())[before:]
    return [r.length or 0 for r in requests if r.method == "PATCH" and r.status == 204]


def test_piece_sizes_follow_the_links_measured_rate(
    logged_server: LiveServer,  # noqa: F811
    big_file: Path,
    client_env: dict[str, str],
) -> None:
    """At 80 ms a piece carries what the link does in 32 round trips: about
    26 MB at 10 MB/s (three chunks), the whole rest of the 64 MiB payload at
    40 MB/s."""
    slow = patch_lengths(logged_server, big_file, client_env, 10 * MB, revision=1)
    fast = patch_lengths(logged_server, big_file, client_env, 40 * MB, revision=2)
    assert sum(slow) == sum(fast) == big_file.stat().st_size
    # The first piece goes before the rate is known (one chunk); then the
    # link's size: 10 MB/s x 32 x 80 ms = 25.6 MB, the nearest whole number
    # of chunks (three; the rate as measured may make it two or four); the
    # last bytes (the rest; the held-back tail goes with it once the final
    # upload exists) after them.
    assert slow[0] == CHUNK and slow[1] in (2 * CHUNK, 3 * CHUNK, 4 * CHUNK), slow
    assert len(slow) >= 3 and max(slow) <= 4 * CHUNK, slow
    # 40 MB/s: the rest at once, the held-back tail with it.
    assert fast[0] == CHUNK and len(fast) == 2, fast
    assert fast[1] > 2 * slow[1], (fast, slow)
