"""Capacity: many slow uploads at once, and what else the server still answers.

For each N (default 0, 64, 256, 1000) and each server, started fresh:

* a separate process (asyncio, one raw socket per upload) creates N uploads of
  8 MiB and sends each one's PATCH body at 50 kB/s (a slice every 0.25 s, the
  uploads' phases spread over the tick);
* once every PATCH is under way, for ``--seconds``, this process measures one
  request after the other, each on a new connection (as a browser or a site
  that was not connected yet): ``GET /api/v1/ping``, ``GET
  /api/v1/events/<graceid>/reports`` (20 events, 10 reports each) and a new
  64 KiB upload (POST, then PATCH); p50, p99 and max of each, requests that
  failed or got no answer within ``--probe-timeout`` counted apart, by step
  and status ("PATCH timeout");
* meanwhile the server's process tree: RSS summed and PSS (proportional set
  size, from ``/proc/<pid>/smaps_rollup``: pages shared between the forked
  workers counted once), the highest seen; CPU (cores busy on average);
* at the end each slow upload stops sending (what it sent reaches the server:
  the socket's send queue drains), closes its connection, and its offset
  (HEAD) must come to every byte it sent: "lost" counts the bytes missing.

With ``--silent SHARE``, that share of the slow uploads goes silent after
``--silent-after`` bytes: the connection stays open, nothing more is sent.  The
server must cut each one after its ``read_timeout`` (``--read-timeout``, written
into the server's configuration) and answer; at the end each silent upload's
offset (HEAD) must be every byte it sent, and a PATCH of 64 KiB from that
offset must succeed (204: the upload's lock was released).

@tus/server (``bench/js``, ``npm ci`` there) runs through the same harness:
it has no ping or links API, so only its new uploads are measured.

    .venv/bin/python -m bench.capacity_bench                     # N = 0, 64, 256, 1000
    .venv/bin/python -m bench.capacity_bench --uploads 0 32 --seconds 10 --servers dqrxfer
    .venv/bin/python -m bench.capacity_bench --serve-args='--workers 4 --threads 8'
    .venv/bin/python -m bench.capacity_bench --uploads 1000 --servers dqrxfer \
        --silent 0.1 --read-timeout 10

The load generator shares the machine with the server; the load average
(``os.getloadavg``) is printed beside every row.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import json
import multiprocessing
import os
import random
import resource
import shlex
import socket
import statistics
import struct
import sys
import termios
import time
import urllib.request
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import cast

from bench.links_bench import fill, graceid
from bench.servers import Server, TusNode, process_tree, tree_memory
from tests.support.live import serve_command

MiB = 1024 * 1024
BODY = 8 * MiB
RATE = 50_000  # bytes per second and upload
TICK = 0.25
SMALL = 64 * 1024
EVENTS = 20


# -- the servers ------------------------------------------------------------------


class DqrxferServe(Server):
    """``dqrxfer-server serve`` with its defaults (plus ``--serve-args``), the
    links API's database filled with a few events."""

    name = "dqrxfer"

    def __init__(self, extra: list[str], read_timeout: float | None = None) -> None:
        super().__init__()
        self.extra = extra
        database = self.workdir / "links.sqlite"
        fill(f"sqlite:///{database}", EVENTS)
        self.config = self.workdir / "server.toml"
        settings = f"database_url = {json.dumps(f'sqlite:///{database}')}\n"
        if read_timeout is not None:
            settings += f"read_timeout = {read_timeout}\n"
        self.config.write_text(settings)

    def command(self) -> list[str]:
        return serve_command(
            self.port, self.workdir / "data", "--config", str(self.config), *self.extra
        )

    def ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{self.port}/api/v1/ping"
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                time.sleep(0.05)
        # Every worker up (each may bind a socket of its own): the workers
        # are the master's children; wait until their number stops growing.
        assert self.process is not None
        stable, last = 0, -1
        while stable < 10 and time.monotonic() < deadline:
            count = len(process_tree(self.process.pid))
            stable = stable + 1 if count == last else 0
            last = count
            time.sleep(0.1)


def make_server(name: str, serve_args: list[str], read_timeout: float | None) -> Server:
    return DqrxferServe(serve_args, read_timeout) if name == "dqrxfer" else TusNode()


def metadata(index: int) -> str:
    fields = {
        "project": "O4",
        "graceid": "S230518h",
        "uploader": "llo",
        "revision": str(index + 1),
        "filename": f"capacity-{index}.bin",
        "kind": "file",
    }
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


# -- the slow uploads (a process of their own) --------------------------------------


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: str, body: bytes = b""
) -> tuple[int, dict[str, str]]:
    writer.write(head.encode("latin-1") + body)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if length:
        await reader.readexactly(length)
    return status, headers


def _head(method: str, path: str, port: int, headers: dict[str, str]) -> str:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


def _path_of(location: str, port: int) -> str:
    return location.split(f":{port}", 1)[-1] if location.startswith("http") else location


async def _create(port: int, tus_path: str, index: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        headers = {
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(BODY),
            "Upload-Metadata": metadata(index),
            "Content-Length": "0",
        }
        status, reply = await _exchange(reader, writer, _head("POST", tus_path, port, headers))
        if status != 201:
            raise RuntimeError(f"creation answered {status}")
        return _path_of(reply["location"], port)
    finally:
        writer.close()


def _unsent(sock: socket.socket) -> int:
    """Bytes still in the socket's send queue (not acknowledged by the peer)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]


@dataclass
class Trickled:
    """What one slow upload sent; for a silent one, how the server ended it."""

    sent: int
    silent: bool = False
    #: The server's answer to the silent PATCH (None: closed without one).
    cut_status: int | None = None
    #: Seconds from the last byte sent to the server's answer or close.
    cut_after: float | None = None


async def _trickle(
    port: int,
    path: str,
    started: asyncio.Event,
    stop: asyncio.Event,
    silent_after: int | None = None,
) -> Trickled:
    """Send a PATCH body of BODY bytes at RATE until ``stop``, or, with
    ``silent_after``, until that many bytes are sent: then send nothing more
    and wait for the server to end the request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    headers = {
        "Tus-Resumable": "1.0.0",
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(BODY),
    }
    writer.write(_head("PATCH", path, port, headers).encode("latin-1"))
    piece = b"x" * int(RATE * TICK)
    sent = 0
    await asyncio.sleep(random.uniform(0, TICK))  # spread the uploads' phases
    started.set()
    next_tick = time.monotonic()
    limit = BODY - len(piece) if silent_after is None else min(silent_after, BODY - 1)
    while not stop.is_set() and sent < limit:
        writer.write(piece[: limit - sent])
        await writer.drain()
        sent += min(len(piece), limit - sent)
        next_tick += TICK
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_tick - time.monotonic()))
    # What was written reaches the server before the connection closes
    # (a FIN after the data: the server reads every byte, then the early end).
    sock = writer.get_extra_info("socket")
    deadline = time.monotonic() + 60
    while _unsent(sock) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    result = Trickled(sent, silent=silent_after is not None)
    if result.silent:
        # Silent from here on, connection open: the server's read timeout ends it.
        quiet_since = time.monotonic()
        with contextlib.suppress(TimeoutError, ConnectionError, ValueError, IndexError):
            line = await asyncio.wait_for(reader.readline(), 900)
            result.cut_status = int(line.split()[1]) if line else None
        result.cut_after = time.monotonic() - quiet_since
    writer.close()
    return result


async def _offset(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = _head("HEAD", path, port, {"Tus-Resumable": "1.0.0"})
        writer.write(head.encode("latin-1"))
        await writer.drain()
        status_line = await reader.readline()
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        if int(status_line.split()[1]) != 200:
            raise RuntimeError(f"HEAD {path}: {status_line!r}")
        return int(headers["upload-offset"])
    finally:
        writer.close()


async def _resume(port: int, path: str, offset: int) -> tuple[int, int]:
    """PATCH 64 KiB at ``offset``: (status, the new offset)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        headers = {
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(SMALL),
        }
        head = _head("PATCH", path, port, headers)
        status, reply = await _exchange(reader, writer, head, b"r" * SMALL)
        return status, int(reply.get("upload-offset", "-1"))
    finally:
        writer.close()


def silent_indices(count: int, share: float) -> set[int]:
    """Which of ``count`` uploads go silent: ``share`` of them, spread evenly."""
    silent = round(count * share)
    return {i * count // silent for i in range(silent)} if silent else set()


async def _slow_uploads(
    count: int, port: int, tus_path: str, pipe: Pipe, silent: set[int], silent_after: int
) -> None:
    # Creations of one owner take turns on its lock (the cap on its
    # unfinished bytes), each reading the owner's uploads in progress.
    limit = asyncio.Semaphore(2)

    async def create(index: int) -> str:
        async with limit:
            return await _create(port, tus_path, 1000 + index)

    paths = await asyncio.gather(*(create(i) for i in range(count)))
    stop = asyncio.Event()
    started = [asyncio.Event() for _ in range(count)]
    tasks = [
        asyncio.create_task(
            _trickle(port, path, event, stop, silent_after if index in silent else None)
        )
        for index, (path, event) in enumerate(zip(paths, started, strict=True))
    ]
    for event in started:
        await event.wait()
    pipe.send("started")
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "stop"
    stop.set()
    trickled = await asyncio.gather(*tasks)
    lost, deadline = 0, time.monotonic() + 120
    silent_lost, resumed, statuses = 0, 0, set()
    for path, upload in zip(paths, trickled, strict=True):
        while True:  # the server finishes the cut request (bytes kept, lock released)
            offset = await _offset(port, path)
            if offset >= upload.sent or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        lost += max(0, upload.sent - offset)
        if upload.silent:
            silent_lost += abs(upload.sent - offset)
            statuses.add(upload.cut_status)
            status, after = await _resume(port, path, offset)
            resumed += status == 204 and after == offset + SMALL
    cut_after = [u.cut_after for u in trickled if u.silent and u.cut_after is not None]
    pipe.send(
        {
            "sent": sum(u.sent for u in trickled),
            "lost": lost,
            "silent": len(cut_after),
            "silent_lost": silent_lost,
            "silent_resumed": resumed,
            "silent_statuses": sorted(statuses, key=str),
            "silent_cut_after": (min(cut_after), max(cut_after)) if cut_after else None,
        }
    )


def slow_upload_process(
    count: int, port: int, tus_path: str, pipe: Pipe, silent: set[int], silent_after: int
) -> None:
    raise_open_files_limit()
    asyncio.run(_slow_uploads(count, port, tus_path, pipe, silent, silent_after))


# -- the probes ----------------------------------------------------------------------


@dataclass
class Probe:
    name: str
    times: list[float] = field(default_factory=list)
    failures: int = 0
    #: What each failure was: "POST 423", "PATCH timeout", ...
    reasons: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, float | int | None]:
        if not self.times:
            return {
                "p50": None,
                "p99": None,
                "max": None,
                "n": 0,
                "failed": self.failures,
                "reasons": self.reasons,
            }
        ordered = sorted(self.times)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return {
            "p50": statistics.median(ordered) * 1000,
            "p99": p99 * 1000,
            "max": ordered[-1] * 1000,
            "n": len(ordered),
            "failed": self.failures,
            "reasons": self.reasons,
        }


def _request(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes, timeout: float
) -> tuple[int, dict[str, str]]:
    """One request on a new connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        all_headers = {**headers, "Content-Length": str(len(body)), "Connection": "close"}
        sock.sendall(_head(method, path, port, all_headers).encode("latin-1") + body)
        reader = sock.makefile("rb")
        status = int(reader.readline().split()[1])
        reply: dict[str, str] = {}
        while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
            key, _, value = line.decode("latin-1").partition(":")
            reply[key.strip().lower()] = value.strip()
        if method != "HEAD" and status not in (204, 304):
            reader.read(int(reply.get("content-length", "0")))
        return status, reply


def probe_round(server: Server, probes: dict[str, Probe], index: int, timeout: float) -> None:
    port = server.port
    body = os.urandom(SMALL)
    for name, probe in probes.items():
        start = time.perf_counter()
        step, status = "GET", 0
        try:
            if name == "ping":
                status, _ = _request(port, "GET", "/api/v1/ping", {}, b"", timeout)
                ok = status == 200
            elif name == "links":
                path = f"/api/v1/events/{graceid(index % EVENTS)}/reports"
                status, _ = _request(port, "GET", path, {}, b"", timeout)
                ok = status == 200
            else:
                headers = {
                    "Tus-Resumable": "1.0.0",
                    "Upload-Length": str(SMALL),
                    "Upload-Metadata": metadata(100_000 + index),
                }
                step = "POST"
                status, reply = _request(port, "POST", server.tus_path, headers, b"", timeout)
                ok = status == 201
                if ok:
                    headers = {
                        "Tus-Resumable": "1.0.0",
                        "Upload-Offset": "0",
                        "Content-Type": "application/offset+octet-stream",
                    }
                    target = _path_of(reply["location"], port)
                    step = "PATCH"
                    status, _ = _request(port, "PATCH", target, headers, body, timeout)
                    ok = status == 204
        except TimeoutError:
            ok, status = False, -1
        except (OSError, ValueError, IndexError):
            ok = False
        if ok:
            probe.times.append(time.perf_counter() - start)
        else:
            probe.failures += 1
            reason = f"{step} {'timeout' if status == -1 else status or 'error'}"
            probe.reasons[reason] = probe.reasons.get(reason, 0) + 1


# -- memory and CPU --------------------------------------------------------------------


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# -- one run ---------------------------------------------------------------------------


def run(name: str, count: int, args: argparse.Namespace) -> dict[str, object]:
    server = make_server(name, shlex.split(args.serve_args), args.read_timeout).start()
    assert server.process is not None
    probes = {key: Probe(key) for key in (("upload",) if name != "dqrxfer" else PROBES)}
    ours, theirs = multiprocessing.Pipe()
    silent = silent_indices(count, args.silent)
    uploader = multiprocessing.Process(
        target=slow_upload_process,
        args=(count, server.port, server.tus_path, theirs, silent, args.silent_after),
    )
    result: dict[str, object] = {"server": name, "uploads": count}
    try:
        sys.stdout.flush()  # not copied into the child
        uploader.start()
        wait_for(ours, uploader, 600, "start")
        ours.recv()
        time.sleep(1.0)  # the last PATCHes' first bytes reach the server
        cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
        peak_rss = peak_pss = 0
        index = 0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            probe_round(server, probes, index, args.probe_timeout)
            index += 1
            if index % 5 == 0:
                rss, pss = tree_memory(server.process.pid)
                peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(args.interval)
        rss, pss = tree_memory(server.process.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        cores = (server.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
        load = os.getloadavg()[0]
        ours.send("stop")
        wait_for(ours, uploader, 300, "end")
        ending = ours.recv()
        uploader.join(30)
        result.update(
            {
                "probes": {key: probe.summary() for key, probe in probes.items()},
                "rss_mib": peak_rss / MiB,
                "pss_mib": peak_pss / MiB,
                "cores": cores,
                "load": load,
                "sent_mib": ending["sent"] / MiB,
                "lost_bytes": ending["lost"],
                **{key: value for key, value in ending.items() if key.startswith("silent")},
            }
        )
    finally:
        if uploader.is_alive():
            uploader.kill()
        server.stop()
    return result


PROBES = ("ping", "links", "upload")


def wait_for(pipe: Pipe, uploader: multiprocessing.Process, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not pipe.poll(1):
        if not uploader.is_alive():
            raise RuntimeError(f"the slow uploads' process ended ({uploader.exitcode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the slow uploads did not {what} within {seconds} s")


def fmt(value: float | int | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def print_row(result: dict[str, object]) -> None:
    probes = result["probes"]
    assert isinstance(probes, dict)
    cells = []
    for key in PROBES:
        summary = probes.get(key)
        if summary is None:
            cells.append("n/a")
            continue
        text = f"{fmt(summary['p50'])}/{fmt(summary['p99'])}/{fmt(summary['max'])}"
        if summary["failed"]:
            reasons = ", ".join(f"{k}: {v}" for k, v in summary["reasons"].items())
            tried = summary["n"] + summary["failed"]
            text += f" ({summary['failed']} failed of {tried}: {reasons})"
        cells.append(text)
    print(
        f"| {result['server']} | {result['uploads']} | "
        + " | ".join(cells)
        + f" | {result['rss_mib']:.0f} | {result['pss_mib']:.0f} | {result['cores']:.2f}"
        + f" | {result['lost_bytes']} of {result['sent_mib']:.0f} MiB | {result['load']:.1f} |",
        flush=True,
    )
    if result.get("silent"):
        low, high = cast(tuple[float, float], result["silent_cut_after"])
        print(
            f"  silent: {result['silent']} uploads cut after {low:.1f} to {high:.1f} s"
            f" (answers {result['silent_statuses']}), {result['silent_lost']} bytes differ"
            f" from what they sent, {result['silent_resumed']} resumed (PATCH 204)",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, nargs="+", default=[0, 64, 256, 1000])
    parser.add_argument("--servers", nargs="+", default=["dqrxfer", "tus-node"])
    parser.add_argument("--seconds", type=float, default=20, help="measuring time per run")
    parser.add_argument("--interval", type=float, default=0.05, help="pause between probe rounds")
    parser.add_argument("--probe-timeout", type=float, default=10)
    parser.add_argument("--serve-args", default="", help="more arguments for `serve`")
    parser.add_argument(
        "--silent", type=float, default=0.0, help="share of the slow uploads that go silent"
    )
    parser.add_argument(
        "--silent-after", type=int, default=256 * 1024, help="bytes a silent upload sends"
    )
    parser.add_argument(
        "--read-timeout", type=float, help="the server's read_timeout (default: its own, 60 s)"
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    raise_open_files_limit()  # the servers inherit it
    print(
        "| server | slow uploads | ping ms p50/p99/max | links ms p50/p99/max "
        "| new 64 KiB upload ms p50/p99/max | RSS MiB | PSS MiB | cores | lost | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for count in args.uploads:
        for name in args.servers:
            result = run(name, count, args)
            print_row(result)
            results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
