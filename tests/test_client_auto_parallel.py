"""``--parallel auto`` (the default): a large payload goes in as many streams
as earlier uploads to the same server showed to pay (``dqrxfer.linkmemory``).
Over a long link that caps each connection the count climbs 1, 2, 4; on
loopback (no long link) it stays 1; ``--parallel 1`` forces one stream.  The
streams are counted on the server's side (its access log: one PATCHed upload
per stream), not timed."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from dqrxfer.linkmemory import GAIN, LinkRecord, RememberedLinks
from dqrxfer.pieces import LONG_ROUND_TRIP
from support.cli import run_cli
from support.faultproxy import FaultProxy, Faults
from support.kill import kill_when
from support.live import LiveServer
from support.request_log import Request, requests_of
from support.tus import dqr_upload_command

MB = 1_000_000
#: A 40 ms link whose connections carry 10 MB/s each: the 64 MiB payload
#: takes 6.7 s in one stream, half that in two (the server's join after the
#: last byte is a fraction of a second), so twice the streams pay.
CAPPED = Faults(delay=0.02, rate=10 * MB)


def remembered(env: dict[str, str]) -> RememberedLinks:
    """What the client remembers of links, in its cache directory."""
    return RememberedLinks(Path(env["XDG_CACHE_HOME"]) / "dqrxfer" / "links.json")


def streams_of(
    server: LiveServer, url: str, payload: Path, env: dict[str, str], revision: int, *options: str
) -> int:
    """Upload ``payload`` to ``url`` (the server or a proxy in front of it)
    as ``revision``: the number of uploads the server took PATCHes for (one
    per stream: the final upload is never PATCHed)."""
    before = len(requests_of(server.log()))
    command = dqr_upload_command(url, *options, str(payload), revision=revision)
    done = run_cli(*command, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert server.published(payload.name).stat().st_size == payload.stat().st_size
    requests: list[Request] = requests_of(server.log())[before:]
    patched = {r.path for r in requests if r.method == "PATCH"}
    created = [r for r in requests if r.method == "POST" and r.status == 201]
    assert len(created) == len(patched) + 1, requests  # the partial uploads and the final one
    return len(patched)


def test_over_a_link_that_caps_each_connection_the_default_climbs_to_four_streams(
    logged_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    links = remembered(client_env)
    with FaultProxy(logged_server.port, CAPPED) as proxy:
        endpoint = f"{proxy.url}/files/"
        counts = [
            streams_of(logged_server, proxy.url, big_file, client_env, revision)
            for revision in (1, 2, 3)
        ]
        # One stream on first contact, then two, then (two paid) four.
        assert counts == [1, 2, 4], counts
        record = links.get(endpoint)
        assert record is not None and record.round_trip is not None
        assert record.round_trip >= 0.04, record  # the proxy's delay, both ways
        assert record.rates[2] >= GAIN * record.rates[1], record
        # The counts below are chosen from what was learnt before a byte goes:
        # the cap that taught it is not needed to count them (the uploads would
        # spend 10 s behind it); the delay stays, so the link is still long.
        proxy.faults = replace(CAPPED, rate=None)
        # From now on the count that paid: four (unless a busy machine
        # joined the four parts so slowly that four did not beat two).
        expected = 4 if record.rates[4] >= GAIN * record.rates[2] else 2
        assert streams_of(logged_server, proxy.url, big_file, client_env, 4) == expected
        # --parallel 1 forces one stream whatever was learnt.
        assert streams_of(logged_server, proxy.url, big_file, client_env, 5, "--parallel", "1") == 1


def test_on_loopback_the_default_stays_one_stream(
    logged_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    """Loopback is no long link: never split.  (A machine busy enough to
    answer a request on loopback in 30 ms or more would look like one for
    a run; the memory keeps the quickest round trip of all runs.)"""
    links = remembered(client_env)
    endpoint = f"{logged_server.url}/files/"
    for revision in (1, 2, 3):
        record = links.get(endpoint)
        count = streams_of(logged_server, logged_server.url, big_file, client_env, revision)
        if record is None or (record.round_trip or 0) < LONG_ROUND_TRIP:
            assert count == 1, (revision, record)
    record = links.get(endpoint)
    assert record is not None and record.round_trip is not None
    assert record.round_trip < LONG_ROUND_TRIP, record
    assert record.streams() == 1


def test_the_stream_count_climbs_while_more_streams_pay_and_stops_where_they_do_not() -> None:
    long_link = 0.08
    assert LinkRecord().streams() == 1  # nothing known
    assert LinkRecord(0.001, {1: 100e6}).streams() == 1  # loopback or a LAN: never
    assert LinkRecord(long_link, {}).streams() == 1  # one stream is measured first
    assert LinkRecord(long_link, {1: 20e6}).streams() == 2  # then two are tried once
    assert LinkRecord(long_link, {1: 20e6, 2: 38e6}).streams() == 4
    assert LinkRecord(long_link, {1: 20e6, 2: 38e6, 4: 70e6}).streams() == 4
    # Four did not pay beyond two (a link that carries 40 MB/s in all): two.
    assert LinkRecord(long_link, {1: 20e6, 2: 38e6, 4: 41e6}).streams() == 2
    # Two did not pay (one connection carries the link's rate): one.
    assert LinkRecord(long_link, {1: 60e6, 2: 55e6}).streams() == 1
    assert LinkRecord(long_link, {1: 60e6, 2: 55e6, 4: 200e6}).streams() == 1


def test_the_memory_is_per_server_expires_and_survives_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "links.json"
    links = RememberedLinks(path, max_age=3600)
    links.saw("https://a/files/", 1, 20e6, 0.08)
    links.saw("https://a/files/", 2, 39e6, 0.09)  # a slower answer: the quickest is kept
    links.saw("https://b/files/", 1, 90e6, 0.3)
    record = links.get("https://a/files/")
    assert record == LinkRecord(0.08, {1: 20e6, 2: 39e6})
    assert links.get("https://c/files/") is None
    # A rate measured too long ago is not used.
    data = json.loads(path.read_text())
    data["servers"]["https://a/files/"]["rates"]["1"][1] = time.time() - 7200
    path.write_text(json.dumps(data))
    assert links.get("https://a/files/") == LinkRecord(0.08, {2: 39e6})
    path.write_text("{not json")
    assert links.get("https://a/files/") is None
    links.saw("https://a/files/", 1, 20e6, 0.08)  # written afresh
    assert links.get("https://a/files/") == LinkRecord(0.08, {1: 20e6})


def test_an_upload_cut_short_in_two_streams_resumes_in_two_whatever_was_learnt_since(
    logged_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    """The count is part of how a payload is split: a re-run goes on with
    the partial uploads of the run that was killed, in their count, even
    though the memory would now choose another."""
    links = remembered(client_env)
    size = big_file.stat().st_size

    def on_server() -> int:
        files = (logged_server.data_dir / "uploads").glob("*")
        return sum(path.stat().st_size for path in files if path.is_file() and not path.suffix)

    with FaultProxy(logged_server.port, CAPPED) as proxy:
        endpoint = f"{proxy.url}/files/"
        links.saw(endpoint, 1, 10 * MB, 0.04)  # one stream measured: two are tried next
        command = dqr_upload_command(proxy.url, "--retry-wait", "0.05", str(big_file))
        kill_when(command, client_env, lambda: on_server() >= size // 3, "a third on the server")
        first = requests_of(logged_server.log())
        # The killed run's PATCHes never ended (the log names a request when
        # it ends): its resume entry names its partial uploads.
        entries = list((Path(client_env["XDG_CACHE_HOME"]) / "dqrxfer" / "uploads").glob("*.json"))
        assert len(entries) == 1, entries
        urls = json.loads(entries[0].read_text())["partials"]
        assert len(urls) == 2, urls  # the killed run sent in two streams
        partials = {urlsplit(url).path for url in urls}
        links.saw(endpoint, 2, 30 * MB, 0.04)  # two paid: four would be tried next
        learnt = links.get(endpoint)
        assert learnt is not None and learnt.streams() == 4, learnt
        done = run_cli(*command, env=client_env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Resuming big.bin at" in done.stderr
    again = requests_of(logged_server.log())[len(first) :]
    patched = {r.path for r in again if r.method == "PATCH"}
    assert patched and patched <= partials, again
    assert not [r for r in again if r.method == "POST" and r.path == "/files/"][1:], again
    assert logged_server.published(big_file.name).stat().st_size == size


@pytest.mark.parametrize("value", ["0", "-2", "four", ""])
def test_a_bad_parallel_count_is_a_usage_error_naming_the_option(
    value: str, tmp_path: Path, client_env: dict[str, str]
) -> None:
    payload = tmp_path / "summary.json"
    payload.write_text("{}")
    command = dqr_upload_command("http://127.0.0.1:9", "--parallel", value, str(payload))
    done = run_cli(*command, env=client_env)
    assert done.returncode == 2, done.stderr
    assert "--parallel: must be 'auto' or a whole number of at least 1" in done.stderr
