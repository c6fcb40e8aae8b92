"""Client benchmarks: dqr-upload against a minimal streaming tus client, same
server, same run; the client's memory; flaky links; parallel streams over a
long path.

    .venv/bin/python -m bench.client_bench throughput --size-mib 1024 --runs 3
    .venv/bin/python -m bench.client_bench memory --size-mib 512
    .venv/bin/python -m bench.client_bench flaky --size-mib 64 --uploads 5
    .venv/bin/python -m bench.client_bench parallel --size-mib 256 --rtt-ms 100 --runs 3

Every configuration gets a fresh server (``bench/servers.py``); configurations
run in a random order in each round, and the tables give medians.  The
command-line client runs as its own process, as users run it (start-up
included); its peak RSS and CPU time come from ``wait4``.  The minimal client
runs inside the benchmark process (no start-up), its CPU time from
``getrusage``, and so do the "Python API" rows: ``dqrxfer.upload.upload``,
what ``dqr-upload`` calls, for the client's work without the process start-up
(hashing, pieces, resume store, final upload and the check of the server's
record all included); the server's CPU time per upload (all its processes) comes
from ``/proc`` before and after.  The flaky and long-path links are the test
suite's fault-injecting proxy (``tests/support/faultproxy.py``) on loopback.

Scratch files (payload, the servers' data) go under ``$BENCH_TMP`` if set:
``BENCH_TMP=/dev/shm`` takes the disk out of the comparison, which on a
virtual machine is most of the run-to-run noise.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from bench.rawhttp import Connection, patch_file
from bench.runs import CliRun, timed_run
from bench.servers import BIN, Dqrxfer
from bench.tables import table
from bench.tus_bench import make_payload, metadata
from tests.support.faultproxy import FaultProxy, Faults
from tests.support.tus import dqr_upload_command

HERE = Path(__file__).resolve().parent


MiB = 1024 * 1024


def crc32_header(data: bytes) -> str:
    return "crc32 " + base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def minimal_upload(
    port: int, path: Path, chunk: int, index: int, checksums: bool, sha256: bool = False
) -> float:
    """The reference: a minimal streaming tus client (one keep-alive socket,
    bodies sent with ``sendfile``, nothing else: no hashing unless
    ``checksums``, then a CRC-32 per chunk computed as it goes, or ``sha256``,
    then the payload's SHA-256 first, sent in the metadata as the report
    contract asks)."""
    size = path.stat().st_size
    started = time.perf_counter()
    fields = metadata(index)
    if sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(MiB):
                digest.update(block)
        fields += ",sha256 " + base64.b64encode(digest.hexdigest().encode()).decode()
    connection = Connection("127.0.0.1", port)
    reply = connection.request(
        "POST",
        "/files/",
        {"Tus-Resumable": "1.0.0", "Upload-Length": str(size), "Upload-Metadata": fields},
    )
    assert reply.status == 201, (reply.status, reply.body)
    target = "/files/" + reply.headers["location"].rstrip("/").rsplit("/", 1)[-1]
    with open(path, "rb") as handle:

        def crc32_of(_: int, offset: int, count: int) -> str:
            return crc32_header(os.pread(handle.fileno(), count, offset))

        patch_file(connection, target, handle, size, chunk, crc32_of if checksums else None)
    connection.close()
    return time.perf_counter() - started


def dqr_upload(
    url: str, path: Path, revision: int, extra: list[str], cache: Path, bin_dir: Path = BIN
) -> CliRun:
    """Run dqr-upload (of ``bin_dir``) as a process: its time, peak RSS, CPU and stderr."""
    command = dqr_upload_command(
        url,
        *("--retry-wait", "0.1", *extra, str(path)),
        revision=revision,
        program=str(bin_dir / "dqr-upload"),
    )
    return timed_run(command, {**os.environ, "XDG_CACHE_HOME": str(cache), "DQRXFER_SERVER": ""})


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rounds(
    configs: dict[str, Callable[[int], float]], runs: int, seed: int = 1
) -> dict[str, list[float]]:
    rng = random.Random(seed)
    results: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for run in range(runs):
        rng.shuffle(names)
        for name in names:
            results[name].append(configs[name](run))
            load = os.getloadavg()[0]
            print(
                f"  round {run + 1}: {name}: {results[name][-1]:.2f}s (load {load:.1f})",
                file=sys.stderr,
            )
    return results


# -- throughput ------------------------------------------------------------------


def split_cpus(spec: str | None) -> tuple[set[int] | None, set[int] | None]:
    """``"0:1"`` (or ``"0,1:2,3"``): the server's CPUs and the clients' CPUs."""
    if not spec:
        return None, None
    server, _, client = spec.partition(":")

    def cpus(text: str) -> set[int]:
        return {int(part) for part in text.split(",") if part}

    if not server or not client or cpus(server) & cpus(client):
        raise SystemExit(f"--split-cpus {spec}: want SERVER:CLIENT, two disjoint CPU lists")
    return cpus(server), cpus(client)


def throughput(args: argparse.Namespace, work: Path) -> None:
    path = work / "payload.bin"
    make_payload(path, args.size_mib * MiB)
    chunk = args.chunk_mib * MiB
    cache = work / "cache"
    counter = iter(range(1, 1_000_000))
    cpu: dict[str, list[float]] = {}
    server_cpu: dict[str, list[float]] = {}
    server_cpus, client_cpus = split_cpus(args.split_cpus)
    if client_cpus:
        # This process (the minimal client) and every dqr-upload it starts.
        os.sched_setaffinity(0, client_cpus)

    def with_server(name: str, action: Callable[[Dqrxfer], tuple[float, float]]):  # type: ignore[no-untyped-def]
        def run(_: int) -> float:
            server = Dqrxfer()
            server.cpus = server_cpus
            server.start()
            try:
                before = server.cpu_seconds()
                seconds, used = action(server)
                server_cpu.setdefault(name, []).append(server.cpu_seconds() - before)
            finally:
                server.stop()
            cpu.setdefault(name, []).append(used)
            return seconds

        return run

    def minimal(checksums: bool, sha256: bool = False):  # type: ignore[no-untyped-def]
        def action(server: Dqrxfer) -> tuple[float, float]:
            before = own_cpu()
            seconds = minimal_upload(server.port, path, chunk, next(counter), checksums, sha256)
            return seconds, own_cpu() - before

        return action

    def api(checksums: bool):  # type: ignore[no-untyped-def]
        """The Python API (what dqr-upload calls), in this process like the
        minimal client: the client's work without the process start-up."""
        from dqrxfer.payload import DEFAULT_MAX_PIECE
        from dqrxfer.upload import ReportTarget, UploadOptions, upload

        os.environ["DQRXFER_CACHE_DIR"] = str(cache)
        options = UploadOptions(checksums=checksums, max_piece=DEFAULT_MAX_PIECE)

        def action(server: Dqrxfer) -> tuple[float, float]:
            target = ReportTarget("O4", "S230518h", "llo", next(counter))
            before, started = own_cpu(), time.perf_counter()
            upload(f"http://127.0.0.1:{server.port}", [path], target, options)
            return time.perf_counter() - started, own_cpu() - before

        return action

    def cli(extra: list[str], pinned: bool = True, bin_dir: Path = BIN):  # type: ignore[no-untyped-def]
        """dqr-upload with --chunk-size (or, not ``pinned``, its default
        pieces: 8 MiB growing to 64 MiB while the link holds)."""

        def action(server: Dqrxfer) -> tuple[float, float]:
            url = f"http://127.0.0.1:{server.port}"
            pin = ["--chunk-size", str(args.chunk_mib)] if pinned else []
            options = ["-q", *pin, *extra]
            run = dqr_upload(url, path, next(counter), options, cache, bin_dir)
            return run.seconds, run.cpu

        return action

    names = {
        "minimal client, no checksums": minimal(False),
        "minimal client, crc32 per chunk": minimal(True),
        "minimal client, sha256 first": minimal(False, sha256=True),
        "dqr-upload --no-checksum": cli(["--no-checksum"]),
        "dqr-upload (crc32 per chunk)": cli([]),
        "dqr-upload --no-checksum, default pieces": cli(["--no-checksum"], pinned=False),
        "dqr-upload (crc32 per chunk), default pieces": cli([], pinned=False),
        "Python API in-process, no checksums, default pieces": api(False),
        "Python API in-process (crc32 per chunk), default pieces": api(True),
    }
    if args.baseline_bin:
        # Another install's dqr-upload (an earlier release, say), same rounds.
        for name, extra, pinned in [
            ("dqr-upload --no-checksum", ["--no-checksum"], True),
            ("dqr-upload (crc32 per chunk)", [], True),
            ("dqr-upload --no-checksum, default pieces", ["--no-checksum"], False),
            ("dqr-upload (crc32 per chunk), default pieces", [], False),
        ]:
            names[f"baseline {name}"] = cli(extra, pinned, args.baseline_bin)
    # The minimal client without hashing is every row's reference: always run.
    names = {
        name: action
        for name, action in names.items()
        if name == "minimal client, no checksums"
        or not args.only
        or any(part in name for part in args.only)
    }
    configs = {name: with_server(name, action) for name, action in names.items()}
    results = rounds(configs, args.runs)
    size = args.size_mib
    plain = statistics.median(results["minimal client, no checksums"])
    crc = statistics.median(results.get("minimal client, crc32 per chunk", [math.nan]))
    hashed = statistics.median(results.get("minimal client, sha256 first", [math.nan]))
    rows = []
    for name, times in results.items():
        median = statistics.median(times)
        ours = "dqr-upload" in name or "Python API" in name
        same_work = crc if "crc32" in name else hashed if ours else plain
        rows.append(
            (
                name,
                f"{median:.2f}",
                f"{min(times):.2f}",
                f"{size / median:.0f}",
                f"{100 * plain / median:.0f} %",
                f"{100 * same_work / median:.0f} %",
                f"{statistics.median(cpu[name]):.2f}",
                f"{statistics.median(server_cpu[name]):.2f}",
            )
        )
    cores = ""
    if server_cpus:
        cores = f", server on CPUs {args.split_cpus.replace(':', ', client on ')}"
    print(
        f"\n{size} MiB, {args.chunk_mib} MiB chunks (but the default pieces), "
        f"median of {args.runs} runs, load average {os.getloadavg()[0]:.1f} at the end{cores}\n"
    )
    print(
        table(
            rows,
            (
                "client",
                "seconds",
                "fastest",
                "MiB/s",
                "vs minimal",
                "vs minimal doing the same hashing",
                "client CPU s",
                "server CPU s",
            ),
        )
    )
    digest = hashlib.sha256()
    started = time.perf_counter()
    with open(path, "rb") as handle:
        while block := handle.read(MiB):
            digest.update(block)
    print(f"\nsha256 of the payload alone (page cache): {time.perf_counter() - started:.2f}s")


# -- memory ------------------------------------------------------------------------


def memory(args: argparse.Namespace, work: Path) -> None:
    path = work / "payload.bin"
    make_payload(path, args.size_mib * MiB)
    cache = work / "cache"
    rows = []
    baseline = subprocess.Popen(
        [str(BIN / "python"), "-c", "import dqrxfer.cli.upload, dqrxfer.auth"],
        stdout=subprocess.DEVNULL,
    )
    _, _, usage = os.wait4(baseline.pid, 0)
    rows.append(("imports only (no upload)", "-", f"{usage.ru_maxrss / 1024:.0f}"))
    server = Dqrxfer().start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        revision = 0
        for chunk in args.chunks:
            for parallel in (1, 4):
                peaks = []
                for _ in range(args.runs):
                    revision += 1
                    extra = ["-q", "--chunk-size", str(chunk), "--parallel", str(parallel)]
                    peaks.append(dqr_upload(url, path, revision, extra, cache).rss)
                label = f"dqr-upload --chunk-size {chunk}" + (
                    f" --parallel {parallel}" if parallel > 1 else ""
                )
                rows.append((label, f"{chunk}", f"{statistics.median(peaks) / MiB:.0f}"))
    finally:
        server.stop()
    print(f"\nPeak RSS of the client process, {args.size_mib} MiB payload\n")
    print(table(rows, ("client", "chunk MiB", "peak RSS MiB")))


# -- flaky link --------------------------------------------------------------------


def flaky(args: argparse.Namespace, work: Path) -> None:
    path = work / "payload.bin"
    make_payload(path, args.size_mib * MiB)
    size = path.stat().st_size
    cache = work / "cache"
    links = {
        "clean link": Faults(),
        "cut every 0.25-16 MiB, 5 % stalls": Faults(
            cut_after=(MiB // 4, 16 * MiB),
            stall_probability=0.05,
            stall_after=(0, 8 * MiB),
            stall_seconds=2.0,
        ),
    }
    rows = []
    server = Dqrxfer().start()
    revision = 0
    try:
        for link, faults in links.items():
            for checksums in (True, False):
                with FaultProxy(server.port, faults, seed=7) as proxy:
                    times, ratios = [], []
                    for _ in range(args.uploads):
                        revision += 1
                        proxy.reset_counters()
                        extra = ["-q", "--timeout", "1.5", "--connect-timeout", "1.5"]
                        extra += ["--retries", "30", "--retry-wait", "0.05"]
                        if not checksums:
                            extra.append("--no-checksum")
                        times.append(dqr_upload(proxy.url, path, revision, extra, cache).seconds)
                        ratios.append(proxy.counters.up_bytes / size)
                    rows.append(
                        (
                            link,
                            "crc32" if checksums else "none",
                            f"{statistics.median(times):.2f}",
                            f"{statistics.median(ratios):.3f}",
                            f"{max(ratios):.3f}",
                        )
                    )
    finally:
        server.stop()
    print(f"\n{args.size_mib} MiB payload, {args.uploads} uploads per row (medians)\n")
    print(
        table(
            rows,
            ("link", "chunk checksums", "seconds", "wire / payload", "worst wire / payload"),
        )
    )


# -- parallel streams over a long path ---------------------------------------------


def parallel(args: argparse.Namespace, work: Path) -> None:
    path = work / "payload.bin"
    make_payload(path, args.size_mib * MiB)
    cache = work / "cache"
    faults = Faults(delay=args.rtt_ms / 2000, window=args.window_kib * 1024)
    counter = iter(range(1, 1_000_000))

    def config(streams: int) -> Callable[[int], float]:
        def run(_: int) -> float:
            server = Dqrxfer().start()
            try:
                with FaultProxy(server.port, faults) as proxy:
                    extra = ["-q", "--parallel", str(streams)]
                    return dqr_upload(proxy.url, path, next(counter), extra, cache).seconds
            finally:
                server.stop()

        return run

    configs = {"one stream": config(1), f"--parallel {args.streams}": config(args.streams)}
    results = rounds(configs, args.runs)
    rows = []
    single = statistics.median(results["one stream"])
    for name, times in results.items():
        median = statistics.median(times)
        rows.append(
            (name, f"{median:.1f}", f"{args.size_mib / median:.1f}", f"{single / median:.2f}x")
        )
    print(
        f"\n{args.size_mib} MiB through a proxy adding {args.rtt_ms} ms of round trip "
        f"({args.window_kib} KiB in flight per connection), median of {args.runs} runs\n"
    )
    print(table(rows, ("client", "seconds", "MiB/s", "speed-up")))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("throughput", help="dqr-upload vs a minimal tus client")
    one.add_argument("--size-mib", type=int, default=1024)
    one.add_argument("--chunk-mib", type=int, default=8)
    one.add_argument("--runs", type=int, default=3)
    one.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only the configurations whose name contains this (repeatable; "
        "the minimal client without hashing always runs)",
    )
    one.add_argument(
        "--baseline-bin",
        type=Path,
        help="bin directory of another install (an earlier release): its dqr-upload "
        "runs in the same rounds, as 'baseline' rows",
    )
    one.add_argument(
        "--split-cpus",
        metavar="SERVER:CLIENT",
        help="run the server on some CPUs and the clients on others (e.g. 0:1), as when "
        "they are different machines; by default they share every CPU",
    )
    two = commands.add_parser("memory", help="peak RSS at several chunk sizes")
    two.add_argument("--size-mib", type=int, default=512)
    two.add_argument("--chunks", type=int, nargs="+", default=[8, 64])
    two.add_argument("--runs", type=int, default=3)
    three = commands.add_parser("flaky", help="wire overhead and time on a flaky link")
    three.add_argument("--size-mib", type=int, default=64)
    three.add_argument("--uploads", type=int, default=5)
    four = commands.add_parser("parallel", help="--parallel N vs one stream, long path")
    four.add_argument("--size-mib", type=int, default=256)
    four.add_argument("--rtt-ms", type=int, default=100)
    four.add_argument("--window-kib", type=int, default=2048)
    four.add_argument("--streams", type=int, default=4)
    four.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(
        prefix="client-bench-", dir=os.environ.get("BENCH_TMP")
    ) as tmp:
        {"throughput": throughput, "memory": memory, "flaky": flaky, "parallel": parallel}[
            args.command
        ](args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
