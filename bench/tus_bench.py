"""tus server benchmarks: dqrxfer against the official Node server
(@tus/server + @tus/file-store) and nginx's plain PUT, same client, same run.

Each server is started fresh for each configuration, and each configuration
runs ``--runs`` times; the table reports medians and ratios.

    .venv/bin/python -m bench.tus_bench --size-mib 1024 --runs 3

Contenders: @tus/server, the tus layer of dqrxfer alone (``tus_layer_app.py``:
the blueprint with a FileStore, storing bytes and state as @tus/server does)
and the full application (validation, database, publication into the report
tree), each of the two also with the fsync policy ``never`` (``layer-never``,
``app-never``: @tus/server's durability, so that what the flushes cost and
what the rest costs can be told apart), and, when asked for (``lean``,
``lean-never``), the floor of a report upload's work (``lean_report_app.py``).
Scratch files go to ``$BENCH_TMP`` (default: the system's temporary
directory); point it at the disk a server would use.  Creating files can cost
very different amounts in different directories of one machine (seen: 0.01 ms
against 0.7 ms per file on one filesystem), and every contender creates files.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.rawhttp import Connection, patch_file
from bench.servers import Dqrxfer, LeanReport, Nginx, Server, TusLayer, TusNode
from tests.support.tus import sha1_header

MiB = 1024 * 1024
#: ``--contenders`` keys and the names the tables print.
CONTENDER_KEYS = {
    "node": "@tus/server",
    "layer": "dqrxfer tus layer",
    "layer-never": "dqrxfer tus layer, fsync never",
    "app": "dqrxfer (full app)",
    "app-never": "dqrxfer (full app), fsync never",
    "lean": "report floor (lean_report_app.py)",
    "lean-never": "report floor, fsync never",
}
#: Run unless ``--contenders`` says otherwise (the floor only when asked).
DEFAULT_CONTENDERS = [key for key in CONTENDER_KEYS if not key.startswith("lean")]


def metadata(index: int, revision: int | None = None) -> str:
    """A report upload's metadata: upload ``index`` of a new report (one of
    1,000 revisions, in turn) unless ``revision`` names the report."""
    fields = {
        "project": "O4",
        "graceid": "S230518h",
        "uploader": "llo",
        "revision": str(index % 1000 if revision is None else revision),
        "filename": f"bench-{index}.bin",
        "kind": "file",
    }
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def make_payload(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as handle:
        for _ in range(size // MiB):
            handle.write(block[:1] + os.urandom(15) + block[16:])
        handle.write(os.urandom(size % MiB))
        # On disk before the first server starts: its writeback must not
        # compete with the first run.
        handle.flush()
        os.fsync(handle.fileno())


def chunk_checksums(path: Path, chunk: int) -> list[str]:
    sums = []
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            sums.append(sha1_header(block))
    return sums


def tus_upload(
    server: Server, path: Path, chunk: int, index: int = 0, checksums: list[str] | None = None
) -> float:
    """Create an upload and send the file in ``chunk``-sized PATCHes; seconds taken."""
    size = path.stat().st_size
    connection = Connection("127.0.0.1", server.port)
    start = time.perf_counter()
    reply = connection.request(
        "POST",
        server.tus_path,
        {"Tus-Resumable": "1.0.0", "Upload-Length": str(size), "Upload-Metadata": metadata(index)},
    )
    assert reply.status == 201, (reply.status, reply.body)
    location = reply.headers["location"]
    target = location.split(f":{server.port}", 1)[-1] if location.startswith("http") else location
    sums = checksums or []
    with open(path, "rb") as handle:

        def listed(number: int, _offset: int, _count: int) -> str:
            return sums[number]

        patch_file(connection, target, handle, size, chunk, listed if sums else None)
    elapsed = time.perf_counter() - start
    connection.close()
    return elapsed


def put_upload(server: Nginx, path: Path) -> float:
    size = path.stat().st_size
    connection = Connection("127.0.0.1", server.port)
    start = time.perf_counter()
    with open(path, "rb") as handle:
        reply = connection.request("PUT", server.put_path, {}, file=handle, offset=0, count=size)
    assert reply.status in (201, 204), reply.status
    elapsed = time.perf_counter() - start
    connection.close()
    return elapsed


#: ``--small-reports``: every upload starts a report of its own, or each
#: client fills one report with files (as a site pushes a report file by file).
REPORT_LAYOUTS = ("per-upload", "per-client")


def small_uploads(
    server: Server,
    count: int,
    clients: int,
    size: int,
    with_upload: bool,
    reports: str = "per-upload",
) -> float:
    """``count`` uploads of ``size`` bytes by ``clients`` concurrent clients
    into reports laid out as ``reports`` says; uploads/s."""
    body = os.urandom(size)
    per_client = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]

    def client(number: int) -> None:
        connection = Connection("127.0.0.1", server.port)
        for i in range(per_client[number]):
            index = number * 100000 + i
            headers = {
                "Tus-Resumable": "1.0.0",
                "Upload-Length": str(size),
                "Upload-Metadata": metadata(
                    index, revision=number + 1 if reports == "per-client" else None
                ),
            }
            if with_upload:
                headers["Content-Type"] = "application/offset+octet-stream"
                reply = connection.request("POST", server.tus_path, headers, body=body)
                assert reply.status == 201 and reply.headers.get("upload-offset") == str(size), (
                    reply.status,
                    reply.headers,
                    reply.body,
                )
                continue
            reply = connection.request("POST", server.tus_path, headers)
            assert reply.status == 201, (reply.status, reply.body)
            location = reply.headers["location"]
            target = (
                location.split(f":{server.port}", 1)[-1]
                if location.startswith("http")
                else location
            )
            reply = connection.request(
                "PATCH",
                target,
                {
                    "Tus-Resumable": "1.0.0",
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                },
                body=body,
            )
            assert reply.status == 204, (reply.status, reply.body)
        connection.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return count / (time.perf_counter() - start)


class RssSampler:
    """Peak RSS and PSS of a server's process tree while something runs."""

    def __init__(self, server: Server, interval: float = 0.05) -> None:
        self.server, self.interval = server, interval
        self.baseline, self.baseline_pss = server.memory()
        self.peak, self.peak_pss = self.baseline, self.baseline_pss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss, pss = self.server.memory()
        self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, pss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def fresh(factory: Callable[[], Server], action: Callable[[Server], float]) -> float:
    server = factory().start()
    try:
        return action(server)
    finally:
        server.stop()


def fresh_with_cpu(
    factory: Callable[[], Server], action: Callable[[Server], float]
) -> tuple[float, float]:
    """``action``'s result on a fresh server, and the CPU seconds (user + system)
    the server's processes spent during it."""
    server = factory().start()
    try:
        before = server.cpu_seconds()
        value = action(server)
        return value, server.cpu_seconds() - before
    finally:
        server.stop()


def median_of(
    runs: int, factory: Callable[[], Server], action: Callable[[Server], float]
) -> tuple[float, list[float]]:
    values = [fresh(factory, action) for _ in range(runs)]
    return statistics.median(values), values


def baseline_tree(revision: str, tmp: Path) -> Path:
    """A directory to put first on ``PYTHONPATH`` that holds the ``dqrxfer``
    package as of git ``revision`` (laid out as ``package-dir`` in
    pyproject.toml maps it)."""
    source, tree = tmp / "baseline-source", tmp / "baseline"
    source.mkdir()
    archive = subprocess.run(
        ["git", "archive", revision, "client", "server", "migrations"],
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    shutil.copytree(source / "client", tree / "dqrxfer")
    shutil.copytree(source / "server", tree / "dqrxfer" / "server")
    shutil.copytree(source / "migrations", tree / "dqrxfer" / "migrations")
    return tree


def alternate(
    lineup: list[tuple[str, Callable[[], Server]]],
    payload: Path,
    rounds: int,
    results: dict[str, object],
) -> list[str]:
    """The 1 GiB upload of every contender in turn, 8 and 64 MiB chunks (nginx:
    one PUT, beside each), ``rounds`` times, the order reversed every other
    round; each contender's share of nginx's rate is taken within its round
    (the disk's pace moves between rounds).  Rows: median MB/s, the runs, the
    median share of nginx, the server's CPU seconds per GiB, the load average."""
    size = payload.stat().st_size
    rows = []
    for chunk_mib in (8, 64):
        chunk = chunk_mib * MiB
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in lineup}
        for number in range(rounds):
            for name, factory in lineup if number % 2 == 0 else lineup[::-1]:
                action: Callable[[Server], float] = (
                    functools.partial(put_upload, path=payload)  # type: ignore[assignment]
                    if name == "nginx PUT"
                    else functools.partial(tus_upload, path=payload, chunk=chunk)
                )
                seconds, cpu = fresh_with_cpu(factory, action)
                load = os.getloadavg()[0]
                runs[name].append((seconds, cpu, load))
                rate = size / seconds / 1e6
                print(
                    f"round {number + 1}, {chunk_mib} MiB, {name}: {rate:.0f} MB/s, "
                    f"{cpu:.2f} s CPU, load {load:.1f}",
                    file=sys.stderr,
                )
        results[f"alternate {chunk_mib} MiB"] = runs
        ceiling = runs["nginx PUT"]
        for name, measured in runs.items():
            rates = [size / seconds / 1e6 for seconds, _, _ in measured]
            shares = [ceiling[i][0] / measured[i][0] * 100 for i in range(len(measured))]
            cpu_per_gib = statistics.median(cpu / (size / 2**30) for _, cpu, _ in measured)
            loads = [load for _, _, load in measured]
            rows.append(
                f"| {name} | {chunk_mib} MiB chunks, alternating | "
                f"{statistics.median(rates):.0f} MB/s ({', '.join(f'{r:.0f}' for r in rates)}), "
                f"CPU {cpu_per_gib:.2f} s/GiB, load {min(loads):.1f}-{max(loads):.1f} | | "
                f"{statistics.median(shares):.0f} % ({', '.join(f'{r:.0f}' for r in shares)}) |"
            )
    return rows


def memory_rounds(
    lineup: list[tuple[str, Callable[[], Server]]],
    payload: Path,
    rounds: int,
    results: dict[str, object],
) -> list[str]:
    """RSS and PSS of each contender's whole process tree at rest (started,
    answering, idle for a second), after 300 uploads of 64 KiB by 8 clients,
    and at the peak while then receiving ``payload`` in 8 MiB PATCHes; every
    contender started fresh in each round, in turn, the order reversed every
    other round."""
    measured: dict[str, list[list[tuple[float, float]]]] = {name: [] for name, _ in lineup}
    loads: list[float] = []
    for round_number in range(rounds):
        order = lineup if round_number % 2 == 0 else lineup[::-1]
        for name, factory in order:
            server = factory().start()
            try:
                time.sleep(1)
                points = [server.memory()]
                small_uploads(server, 300, 8, 64 * 1024, False)
                points.append(server.memory())
                with RssSampler(server) as sampler:
                    tus_upload(server, payload, 8 * MiB)
                points.append((sampler.peak, sampler.peak_pss))
            finally:
                server.stop()
            measured[name].append([(rss / MiB, pss / MiB) for rss, pss in points])
            loads.append(os.getloadavg()[0])
    results["memory_mib"] = measured
    results["memory_load"] = loads
    rows = [f"load average {min(loads):.1f} to {max(loads):.1f}"]
    node = measured.get("@tus/server")
    for name, runs in measured.items():
        cells = []
        for point in range(3):
            rss = statistics.median(run[point][0] for run in runs)
            pss = [run[point][1] for run in runs]
            ratio = (
                f", {statistics.median(pss) / statistics.median(r[point][1] for r in node):.2f}x"
                if node and name != "@tus/server"
                else ""
            )
            cells.append(
                f"{rss:.0f} / {statistics.median(pss):.0f} "
                f"({', '.join(f'{p:.0f}' for p in pss)}){ratio}"
            )
        rows.append(f"| {name} | {' | '.join(cells)} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rss-size-mib", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small-count", type=int, default=500)
    parser.add_argument(
        "--small-clients",
        type=int,
        nargs="+",
        default=[1, 8],
        help="concurrent clients of the small-upload part (each count one configuration)",
    )
    parser.add_argument(
        "--small-reports",
        choices=REPORT_LAYOUTS,
        default="per-upload",
        help="small uploads: each starts a report of its own (default), or each client's go "
        "into one report",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        default=["throughput", "fsync", "checksum", "rss", "small"],
        help="which parts to run (also: alternate, the 1 GiB uploads in rounds, see below; "
        "memory, RSS and PSS at rest, after small uploads and receiving, in rounds)",
    )
    parser.add_argument("--workers", type=int, default=4, help="dqrxfer gunicorn workers")
    parser.add_argument(
        "--contenders",
        nargs="*",
        choices=list(CONTENDER_KEYS),
        default=DEFAULT_CONTENDERS,
        help="which servers the throughput and small-upload parts compare (ratios need node)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="the ``alternate`` and ``memory`` parts also run the full app as of this git revision",
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-payload-", dir=os.environ.get("BENCH_TMP")))
    payload = tmp / "payload.bin"
    # Only the parts that send the large payload need it (1 GiB written and
    # flushed before the first server starts is time, not a measurement).
    if set(args.only) & {"throughput", "alternate", "memory", "fsync", "checksum"}:
        make_payload(payload, args.size_mib * MiB)
    size = args.size_mib * MiB
    results: dict[str, object] = {"size_bytes": size, "runs": args.runs}
    ours = lambda: Dqrxfer(workers=args.workers)  # noqa: E731
    layer = lambda: TusLayer(workers=args.workers)  # noqa: E731
    # @tus/server fsyncs nothing: the tus layer with the same durability.
    layer_never = lambda: TusLayer(workers=args.workers, fsync="never")  # noqa: E731
    # The full app with @tus/server's durability: what the report adds
    # without a flush, and what the flushes cost it.
    ours_never = lambda: Dqrxfer(workers=args.workers, fsync="never")  # noqa: E731
    rows: list[str] = []

    def rate(seconds: float) -> float:
        return size / seconds / 1e6

    every: list[tuple[str, Callable[[], Server]]] = [
        ("@tus/server", TusNode),
        ("dqrxfer tus layer", layer),
        ("dqrxfer tus layer, fsync never", layer_never),
        ("dqrxfer (full app)", ours),
        ("dqrxfer (full app), fsync never", ours_never),
        ("report floor (lean_report_app.py)", lambda: LeanReport(workers=args.workers)),
        ("report floor, fsync never", lambda: LeanReport(workers=args.workers, fsync="never")),
    ]
    chosen = {CONTENDER_KEYS[key] for key in args.contenders}
    contenders = [(name, factory) for name, factory in every if name in chosen]

    if "throughput" in args.only:
        ceiling, raw = median_of(args.runs, Nginx, lambda s: put_upload(s, payload))  # type: ignore[arg-type]
        results["nginx_put_s"] = raw
        rows.append(f"| nginx PUT (ceiling) | one request | {rate(ceiling):.0f} MB/s | | |")
        for chunk_mib in (8, 64):
            chunk = chunk_mib * MiB
            medians: dict[str, float] = {}
            for name, factory in contenders:
                medians[name], raw = median_of(
                    args.runs, factory, lambda s, chunk=chunk: tus_upload(s, payload, chunk)
                )
                results[f"{name} {chunk_mib} MiB s"] = raw
            node = medians.get("@tus/server")
            for name, seconds in medians.items():
                ratio = "" if node is None or name == "@tus/server" else f"{node / seconds:.2f}"
                rows.append(
                    f"| {name} | {chunk_mib} MiB chunks | {rate(seconds):.0f} MB/s | {ratio} | "
                    f"{ceiling / seconds * 100:.0f} % |"
                )

    if "alternate" in args.only:
        lineup: list[tuple[str, Callable[[], Server]]] = [("nginx PUT", Nginx), *contenders]
        if args.baseline:
            tree = baseline_tree(args.baseline, tmp)
            lineup.append(
                (
                    f"full app at {args.baseline}",
                    lambda: Dqrxfer(workers=args.workers, pythonpath=str(tree)),
                )
            )
        rows += alternate(lineup, payload, args.runs, results)

    if "memory" in args.only:
        # The server with serve's defaults (4 workers of 320 threads).
        served = [("@tus/server", TusNode), ("dqrxfer tus layer", layer)]
        served.append(("dqrxfer (full app)", lambda: Dqrxfer(workers=args.workers, threads=320)))
        if args.baseline:
            tree = baseline_tree(args.baseline, tmp)
            served.append(
                (
                    f"full app at {args.baseline}",
                    lambda: Dqrxfer(workers=args.workers, threads=320, pythonpath=str(tree)),
                )
            )
        rows.append("| server | at rest: RSS / PSS | after 300 small uploads | receiving, peak |")
        rows += memory_rounds(served, payload, args.runs, results)

    if "fsync" in args.only:
        # The cost of each fsync policy, on the tus layer (no publication).
        for chunk_mib in (8, 64):
            chunk = chunk_mib * MiB
            for policy in ("never", "complete", "always"):
                seconds, raw = median_of(
                    args.runs,
                    lambda policy=policy: TusLayer(workers=args.workers, fsync=policy),
                    lambda s, chunk=chunk: tus_upload(s, payload, chunk),
                )
                results[f"fsync {policy} {chunk_mib} MiB s"] = raw
                rows.append(
                    f"| dqrxfer tus layer, fsync {policy} | {chunk_mib} MiB chunks | "
                    f"{rate(seconds):.0f} MB/s | | |"
                )

    if "checksum" in args.only:
        chunk = 8 * MiB
        sums = chunk_checksums(payload, chunk)
        plain, raw_plain = median_of(
            args.runs, ours, lambda s, chunk=chunk: tus_upload(s, payload, chunk)
        )
        summed, raw_summed = median_of(
            args.runs, ours, lambda s: tus_upload(s, payload, chunk, checksums=sums)
        )
        results["checksum_plain_s"], results["checksum_sha1_s"] = raw_plain, raw_summed
        rows.append(
            f"| dqrxfer | 8 MiB chunks + Upload-Checksum sha1 | {rate(summed):.0f} MB/s | "
            f"cost {(summed / plain - 1) * 100:+.0f} % vs none | |"
        )

    if "rss" in args.only:
        big = tmp / "big.bin"
        make_payload(big, args.rss_size_mib * MiB)
        for name, factory in (("dqrxfer", ours), ("@tus/server", TusNode)):
            growths, rest, peaks = [], [], []
            for _ in range(args.runs):
                server = factory().start()
                try:
                    # Warm every worker up first (imports, caches, database
                    # connections): what is measured is growth with size.
                    small_uploads(server, 32, 8, 64 * 1024, False)
                    with RssSampler(server) as sampler:
                        tus_upload(server, big, big.stat().st_size)
                    growths.append((sampler.peak - sampler.baseline) / MiB)
                    rest.append((sampler.baseline / MiB, sampler.baseline_pss / MiB))
                    peaks.append((sampler.peak / MiB, sampler.peak_pss / MiB))
                finally:
                    server.stop()
            results[f"rss_growth_mib_{name}"] = growths
            results[f"rss_pss_at_rest_mib_{name}"] = rest
            results[f"rss_pss_peak_mib_{name}"] = peaks
            rows.append(
                f"| {name} | peak RSS growth, {args.rss_size_mib} MiB in one PATCH | "
                f"{statistics.median(growths):.1f} MiB | | |"
            )
            rows.append(
                f"| {name} | RSS / PSS after 32 small uploads, then peak while receiving | "
                f"{statistics.median(r for r, _ in rest):.0f} / "
                f"{statistics.median(p for _, p in rest):.0f} MiB, then "
                f"{statistics.median(r for r, _ in peaks):.0f} / "
                f"{statistics.median(p for _, p in peaks):.0f} MiB | | |"
            )
        big.unlink()

    if "small" in args.only:
        for clients in args.small_clients:
            for with_upload in (False, True):
                label = "creation-with-upload" if with_upload else "POST + PATCH"
                if args.small_reports == "per-client":
                    label += ", a report per client"
                rates, cpu = {}, {}
                for name, factory in contenders:
                    measured = [
                        fresh_with_cpu(
                            factory,
                            lambda s, clients=clients, with_upload=with_upload: small_uploads(
                                s,
                                args.small_count,
                                clients,
                                64 * 1024,
                                with_upload,
                                args.small_reports,
                            ),
                        )
                        for _ in range(args.runs)
                    ]
                    raw = [value for value, _ in measured]
                    rates[name] = statistics.median(raw)
                    cpu[name] = statistics.median(seconds for _, seconds in measured)
                    results[f"small {clients} {label} {name}"] = raw
                    results[f"small {clients} {label} {name} server cpu s"] = [
                        seconds for _, seconds in measured
                    ]
                node = rates.get("@tus/server")
                for name, value in rates.items():
                    ratio = "" if node is None or name == "@tus/server" else f"{value / node:.2f}"
                    per_upload = cpu[name] / args.small_count * 1000
                    rows.append(
                        f"| {name} | {args.small_count} x 64 KiB, {clients} client(s), {label} | "
                        f"{value:.0f} uploads/s, server CPU {per_upload:.2f} ms/upload | "
                        f"{ratio} | |"
                    )

    payload.unlink(missing_ok=True)
    shutil.rmtree(tmp)
    print("| server | workload | median | ratio ours/@tus/server | of nginx ceiling |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
