"""A link that goes dark mid-PATCH: how long until the transfer resumes, with
the server asking a silent request to let go of its upload (``lock_take_over
= true``, the default) and without (``false``: the silent request holds the
upload until ``read_timeout``), in the same run.

    .venv/bin/python -m bench.dark_link_bench                       # 3 rounds, about 10 minutes
    .venv/bin/python -m bench.dark_link_bench --connect-timeout 5 --rounds 1

Each upload goes to a fresh server (4 workers, ``read_timeout`` 60 s, the
default) through the test suite's fault proxy (``tests/support/faultproxy.py``):
80 ms round trip, 20 MB/s per connection, and the connection that carries
the payload's ``--dark-after-mib``-th MiB goes dark: the proxy stops
forwarding its bytes and closes nothing (as a NAT timeout or a Wi-Fi handover
looks to both ends), for longer than the run.  ``dqr-upload`` (defaults, but
``--connect-timeout``) notices when its sends make no progress, reconnects,
asks HEAD and resumes.

Measured per upload, on the proxy's and the data file's clocks:

* **dark to resumed**: from the moment the link went dark until the upload's
  data file on the server grows again (polled every 20 ms).  Without
  take-over the first growth may be an abandoned request's: a PATCH that
  waited for the lock while its client had already given up on its sends
  (``--connect-timeout``) gets the lock when ``read_timeout`` frees it and
  stores what reached the server's buffers; the client is in its back-off
  then, so
* **dark to complete**: until the data file holds the whole payload, says
  more;
* **total**: the command's run time, start to exit; the same upload over a
  link that never goes dark is measured in each round for comparison.

Medians of ``--rounds`` rounds; the two settings alternate in a random order
per round.  ``--throughput`` measures instead what the wait for a release
request costs a body that flows: one PATCH of ``--size-mib`` over loopback,
no proxy, each setting on a fresh server, MB/s; ``--reader`` the body
reader alone (``server/tus/body.py`` over gunicorn's reader of a socket pair,
1 GiB from a thread in 1 MiB sends), with and without a ``released``
callback: wall and CPU seconds, the ratio per round.  Scratch files go under
``$BENCH_TMP`` if set.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.servers import BIN, Dqrxfer
from bench.tables import table
from bench.tus_bench import make_payload, tus_upload
from tests.support.faultproxy import FaultProxy, Faults
from tests.support.tus import dqr_upload_command

MiB = 1024 * 1024
POLL_SECONDS = 0.02
#: After the link goes dark, bytes already forwarded still land: the size
#: the file settles at is read this long after.
SETTLE_SECONDS = 1.0
SETTINGS = {"take-over (now)": True, "no take-over (before)": False}
#: The reference: the same upload over a link that never goes dark.
NEVER_DARK = "link never dark"


class FileWatch:
    """The size of the upload's data file over time (one upload per server)."""

    def __init__(self, uploads: Path) -> None:
        self.uploads = uploads
        self.samples: list[tuple[float, int]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _size(self) -> int:
        sizes = [0]
        if self.uploads.exists():
            for path in self.uploads.iterdir():
                if path.is_file() and not path.suffix:
                    try:
                        sizes.append(path.stat().st_size)
                    except FileNotFoundError:
                        continue
        return max(sizes)

    def _run(self) -> None:
        while not self.stopping.wait(POLL_SECONDS):
            self.samples.append((time.monotonic(), self._size()))

    def complete_after(self, dark: float, size: int) -> float | None:
        """Seconds from ``dark`` until the file held ``size`` bytes."""
        return next((at - dark for at, got in self.samples if got >= size), None)

    def resumed_after(self, dark: float) -> float | None:
        """Seconds from ``dark`` until the file grew past its size then."""
        settled = next((size for at, size in self.samples if at >= dark + SETTLE_SECONDS), None)
        if settled is None:
            return None
        grown = next(
            (at for at, size in self.samples if at > dark + SETTLE_SECONDS and size > settled),
            None,
        )
        return None if grown is None else grown - dark


def start_server(take_over: bool, work: Path) -> Dqrxfer:
    config = work / f"server-{take_over}.toml"
    config.write_text(
        "auto_upgrade = true\nserve_reports = true\n"
        f"lock_take_over = {'true' if take_over else 'false'}\n"
    )
    server = Dqrxfer(extra=["--config", str(config)])
    server.start()
    return server


def throughput(rounds: int, payload: Path, work: Path) -> None:
    """One PATCH of the payload per setting and round, MB/s (medians)."""
    results: dict[str, list[float]] = {name: [] for name in SETTINGS}
    rng = random.Random(1)
    for _ in range(rounds):
        names = list(SETTINGS)
        rng.shuffle(names)
        for name in names:
            server = start_server(SETTINGS[name], work)
            try:
                seconds = tus_upload(server, payload, payload.stat().st_size)
            finally:
                server.stop()
            results[name].append(payload.stat().st_size / seconds / 1e6)
            print(f"{name}: {results[name][-1]:.0f} MB/s (load {os.getloadavg()[0]:.1f})")
    now, before = (statistics.median(results[name]) for name in SETTINGS)
    rows = [(name, f"{statistics.median(values):.0f}") for name, values in results.items()]
    print(table(rows, ("server", "MB/s, one PATCH")))
    print(f"ratio now/before: {now / before:.3f}; load average after: {os.getloadavg()}")


def read_once(size: int, asks: bool) -> tuple[float, float]:
    """Read a ``size``-byte body through :func:`body_reader`; wall and CPU seconds."""
    from gunicorn.http.body import Body, LengthReader
    from gunicorn.http.unreader import SocketUnreader

    from dqrxfer.server.tus.body import body_reader

    server, client = socket.socketpair()
    block = os.urandom(MiB)
    sender = threading.Thread(target=lambda: [client.sendall(block) for _ in range(size // MiB)])
    environ = {
        "wsgi.input": Body(LengthReader(SocketUnreader(server), size)),
        "gunicorn.socket": server,
    }
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        sender.start()
        with body_reader(environ, size, 60, (lambda: False) if asks else None) as read:
            while read(4 * MiB):
                pass
        sender.join()
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        server.close()
        client.close()


def reader(rounds: int) -> None:
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    for number in range(rounds):
        order = [True, False] if number % 2 else [False, True]
        seconds = {asks: read_once(1024 * MiB, asks) for asks in order}
        ratios.append(seconds[True][0] / seconds[False][0])
        cpu_ratios.append(seconds[True][1] / seconds[False][1])
        print(
            f"round {number + 1}: with released {seconds[True][0]:.3f} s "
            f"(CPU {seconds[True][1]:.3f}), without {seconds[False][0]:.3f} s "
            f"(CPU {seconds[False][1]:.3f}), ratio {ratios[-1]:.3f} (load {os.getloadavg()[0]:.1f})"
        )
    print(
        f"median ratio with/without: wall {statistics.median(ratios):.3f}, "
        f"CPU {statistics.median(cpu_ratios):.3f}; load average after: {os.getloadavg()}"
    )


def upload_once(
    take_over: bool | None, payload: Path, dark_after: int, connect_timeout: float, work: Path
) -> tuple[float, float, float]:
    """(dark to resumed, dark to complete, total) seconds; None for
    ``take_over``: a link that never goes dark (0, 0, total)."""
    server = start_server(take_over is not False, work)
    faults = Faults(
        stall_probability=0.0 if take_over is None else 1.0,
        stall_after=(dark_after, dark_after),
        stall_seconds=3600,
        max_stalls=1,
        rate=20e6,
        delay=0.04,
    )
    watch = FileWatch(server.workdir / "data" / "uploads")
    try:
        with FaultProxy(server.port, faults) as proxy:
            line = dqr_upload_command(
                proxy.url, "-q", "--connect-timeout", str(connect_timeout), str(payload)
            )
            env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "DQRXFER_SERVER": ""}
            watch.thread.start()
            started = time.monotonic()
            result = subprocess.run(
                [str(BIN / "dqr-upload"), *line[1:]],
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
            )
            total = time.monotonic() - started
            if result.returncode != 0:
                raise RuntimeError(f"exit code {result.returncode}: {result.stderr}")
            stalls = proxy.counters.stall_times
    finally:
        watch.stopping.set()
        server.stop()
    if take_over is None:
        return 0.0, 0.0, total
    resumed = watch.resumed_after(stalls[0])
    complete = watch.complete_after(stalls[0], payload.stat().st_size)
    if resumed is None or complete is None:
        raise RuntimeError("the upload's file never grew after the link went dark")
    return resumed, complete, total


def spread(values: list[float]) -> str:
    """The median and the range."""
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--dark-after-mib", type=int, default=16)
    parser.add_argument("--connect-timeout", type=float, nargs="+", default=[5.0, 20.0])
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--reader", action="store_true")
    args = parser.parse_args()
    if args.reader:
        print(f"load average before: {os.getloadavg()}", flush=True)
        reader(args.rounds)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-dark-", dir=os.environ.get("BENCH_TMP")))
    payload = work / "report.bin"
    make_payload(payload, args.size_mib * MiB)
    print(f"load average before: {os.getloadavg()}", flush=True)
    if args.throughput:
        throughput(args.rounds, payload, work)
        return 0
    rows = []
    for timeout in args.connect_timeout:
        settings: dict[str, bool | None] = {**SETTINGS, NEVER_DARK: None}
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in settings}
        rng = random.Random(timeout)
        for round_number in range(args.rounds):
            names = list(settings)
            rng.shuffle(names)
            for name in names:
                measured = upload_once(
                    settings[name], payload, args.dark_after_mib * MiB, timeout, work
                )
                results[name].append(measured)
                print(
                    f"--connect-timeout {timeout:g}, round {round_number + 1}, {name}: "
                    f"resumed {measured[0]:.1f} s and complete {measured[1]:.1f} s after dark, "
                    f"total {measured[2]:.1f} s (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        for name, values in results.items():
            rows.append(
                (f"{timeout:g} s", name, *(spread([v[i] for v in values]) for i in range(3)))
            )
    print(f"load average after: {os.getloadavg()}")
    header = ("--connect-timeout", "server", "dark to resumed s", "dark to complete s", "total s")
    print(table(rows, header))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
