"""Time to visible over a long link: dqr-upload, tus-js-client and tuspy through
the same simulated link, in the same run.

    .venv/bin/python -m bench.link_bench          # the core: 100 MiB file, 80 and 300 ms
    .venv/bin/python -m bench.link_bench --rtt 80 --resets no --rounds 1   # a few minutes
    .venv/bin/python -m bench.link_bench --size-mib 1024 --payload file tarball dir --rounds 3

The link is the test suite's fault proxy (``tests/support/faultproxy.py``) on
loopback in front of a fresh server per upload (``bench/servers.py``): it
delays every byte by half the round trip each way, caps each connection's
client-to-server bytes at ``--rate-mb`` MB/s (and, with ``--total-mb``, all
connections together), and with resets cuts the connection that carries the
link's next marked byte, one mark every 30-80 MiB of the link's traffic.

For each upload it measures, from the start of the client's process:

* **visible**: until the links API (``GET /api/v1/events/<graceid>/reports``,
  asked directly on the server every 20 ms, as a page at the server's end
  would) lists the report;
* **limit**: what the link allows: ``bytes / rate + 2 x RTT``: the payload's
  bytes at the link's rate (the rate of the client's connections: N x the
  per-connection cap for ``--parallel N``, at most the total cap), plus one
  round trip for the request that creates the upload and one for the answer
  to the request that carries the last byte.  The proxy does not delay TCP's
  handshake, so this is what a client needs that sends the whole payload in
  one request after creating the upload (tus-js-client's default).  Process
  start-up, hashing and the server's work after the last byte are not part of
  the limit: they are part of the time measured;
* **x limit**: visible / limit (1.00 is the link's limit);
* **limit incl. resets**: the limit plus what each reset the run met costs
  any tus client unavoidably (:meth:`Link.reset_cost`): one round trip to
  learn the server's offset (HEAD) and the bytes in flight when the link is
  cut, about one round trip of data at the connection's rate, sent again.
  The new connection's handshake counts nothing here because the proxy does
  not delay it (on a real link it is one more round trip, and TLS's);
  **x limit incl. resets** is visible over it, the median of the rounds';
* **MB/s while flowing**: the payload's size over the time from the
  arrival at the server of the first piece of a request body (the first
  piece the proxy read of :data:`BODY_PIECE` bytes or more: requests
  without a body are smaller) to that of the last byte: the rate of the
  transfer itself, without start-up, the round trips before the first byte
  and the server's work after the last;
* **listed after last byte**: from the arrival at the server of the last
  byte the client sent before the report was listed (the payload's last
  byte; the proxy's clock, after the delay) until visible;
* **re-sent**: client-to-server bytes the proxy received beyond the
  payload's size (request headers included: a few hundred bytes a request).

Clients alternate within each round (random order per round, new seed per
round); the tables give medians over the rounds.  tus-js-client sends the
payload in one PATCH (``tests/js``: ``npm ci``), tuspy in 8 MiB chunks, both
without checksums or hashing and retrying at once (tus-js-client: after 0,
0.2, 1, 2 s; tuspy: at once, 20 times).  A directory goes to them as the
tarball made of it beforehand (the same files, packed by Python's tarfile).

Scratch files go under ``$BENCH_TMP`` if set.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.servers import BIN, Dqrxfer
from bench.tables import table
from bench.tus_bench import make_payload
from tests.support.faultproxy import FaultProxy, Faults
from tests.support.tus import dqr_upload_command
from tests.support.tus import tar_metadata as report_metadata

HERE = Path(__file__).resolve().parent

MiB = 1024 * 1024
MB = 1_000_000
JS_DIR = HERE.parent / "tests" / "js"
GRACEID = "S230518h"
SITE = "llo"
POLL_SECONDS = 0.02
RESET_EVERY = (30 * MiB, 80 * MiB)
#: A piece the proxy reads of at least this many bytes is part of a request
#: body (a request's line and headers are a few hundred bytes).
BODY_PIECE = 16 * 1024
#: How long a run may take at most, seconds per MiB of payload (and at least 120 s).
TIMEOUT_PER_MIB = 2.0

TUSPY_SCRIPT = """
import json, sys
from tusclient.client import TusClient
options = json.loads(sys.argv[1])
uploader = TusClient(options["endpoint"]).uploader(
    file_path=options["path"], chunk_size=options["chunk"], metadata=options["metadata"],
    retries=20, retry_delay=0,
)
uploader.upload()
"""


# -- payloads --------------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """What a client is given: ``path`` for dqr-upload, ``reference`` (a file:
    the path itself, or the tarball of a directory) for the tus clients."""

    name: str
    path: Path
    reference: Path
    kind: str  # the reference's kind: file or tar
    size: int  # bytes dqr-upload sends (a directory's tar as dqr-upload packs it)


def make_directory(root: Path, size: int, files: int, seed: int = 5) -> None:
    """About ``files`` files of random bytes, ``size`` bytes together, in a few
    sub-directories, of sizes spread like a report's (many small, a few large)."""
    rng = random.Random(seed)
    weights = [rng.paretovariate(1.2) for _ in range(files)]
    scale = size / sum(weights)
    sizes = [max(1, int(weight * scale)) for weight in weights]
    sizes[-1] += size - sum(sizes)
    for index, count in enumerate(sizes):
        path = root / f"part{index % 10}" / f"item{index:04d}.{'png' if count > 65536 else 'html'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            left = count
            while left > 0:
                handle.write(os.urandom(min(MiB, left)))
                left -= min(MiB, left)


def make_tarball(source: Path, target: Path) -> None:
    with tarfile.open(target, "w") as archive:
        for child in sorted(source.iterdir()):
            archive.add(child, arcname=child.name)
    with open(target, "rb+") as handle:
        os.fsync(handle.fileno())


def make_payloads(work: Path, size_mib: int, names: list[str], files: int) -> dict[str, Payload]:
    from dqrxfer.packing import DirectoryPayload

    payloads: dict[str, Payload] = {}
    if "file" in names:
        path = work / f"payload-{size_mib}.bin"
        make_payload(path, size_mib * MiB)
        payloads["file"] = Payload("file", path, path, "file", path.stat().st_size)
    if "tarball" in names or "dir" in names:
        directory = work / f"report-{size_mib}"
        make_directory(directory, size_mib * MiB, files)
        tarball = work / f"report-{size_mib}.tar"
        make_tarball(directory, tarball)
        if "tarball" in names:
            payloads["tarball"] = Payload(
                "tarball", tarball, tarball, "tar", tarball.stat().st_size
            )
        if "dir" in names:
            packed = DirectoryPayload.pack(directory).size
            payloads["dir"] = Payload("dir", directory, tarball, "tar", packed)
    return payloads


# -- one upload through the link ---------------------------------------------------------


@dataclass(frozen=True)
class Link:
    rtt_ms: int
    rate: float  # bytes/s per connection
    total_rate: float | None
    resets: bool

    def faults(self) -> Faults:
        delay = self.rtt_ms / 2000
        # Room for the link's bytes in flight: the rate, not the window, caps it.
        window = max(4 * MiB, int(2 * self.rate * delay))
        return Faults(
            delay=delay,
            window=window,
            rate=self.rate,
            total_rate=self.total_rate,
            cut_link_every=RESET_EVERY if self.resets else None,
        )

    def limit(self, size: int, connections: int) -> float:
        """Seconds the link needs for ``size`` bytes over ``connections`` capped
        connections, plus the two unavoidable round trips (see the module's
        docstring)."""
        rate = self.rate * connections
        if self.total_rate:
            rate = min(rate, self.total_rate)
        return size / rate + 2 * self.rtt_ms / 1000

    def reset_cost(self) -> float:
        """Seconds one reset costs any tus client at least: the HEAD that
        learns the offset (one round trip) and the bytes that were in flight
        (one round trip's worth at the rate), sent again."""
        return 2 * self.rtt_ms / 1000

    def label(self) -> str:
        total = f", total {self.total_rate / MB:.0f} MB/s" if self.total_rate else ""
        resets = "reset every 30-80 MiB" if self.resets else "no resets"
        return f"{self.rtt_ms} ms, {self.rate / MB:.0f} MB/s per connection{total}, {resets}"


class VisiblePoller:
    """Asks the links API every 20 ms until it lists the report; ``seen`` is
    the :func:`time.monotonic` of the first answer that did."""

    def __init__(self, port: int, revision: int) -> None:
        self.port, self.revision = port, revision
        self.seen: float | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> VisiblePoller:
        self.thread.start()
        return self

    def _listed(self, connection: http.client.HTTPConnection) -> bool:
        connection.request("GET", f"/api/v1/events/{GRACEID}/reports?site={SITE}")
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            return False
        reports = json.loads(body)["reports"]
        return any(report["revision"] == self.revision for report in reports)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stopping.is_set():
            try:
                if self._listed(connection):
                    self.seen = time.monotonic()
                    return
            except (OSError, http.client.HTTPException):
                connection.close()
            self.stopping.wait(POLL_SECONDS)

    def wait(self, timeout: float) -> float | None:
        self.thread.join(timeout)
        self.stopping.set()
        return self.seen


@dataclass
class Measured:
    visible: float
    exited: float
    after_last_byte: float  # from the last byte's arrival at the server to visible
    flowing: float  # from the first byte's arrival at the server to the last one's
    up_bytes: int
    resets: int
    connections: int


@dataclass(frozen=True)
class Client:
    name: str
    connections: int  # capped connections it sends over (for the limit)
    command: Callable[[str, Payload, int, Path], list[str]]
    #: a tus client, given the payload's ``reference`` (a directory's tarball)
    reference: bool = False
    #: dqr-upload that has sent to this server within the hour: it remembers
    #: the server's answer to OPTIONS (written before the clock starts)
    knows_server: bool = False
    #: uploads of the same payload through the same link before the clock
    #: starts (without resets): what dqr-upload learns of the link from them
    #: chooses its stream count (``--parallel auto``)
    warmups: int = 0
    #: dqr-upload's options (None: another client)
    options: tuple[str, ...] | None = None

    def sends(self, payload: Payload) -> int:
        """The bytes this client uploads for ``payload``."""
        return payload.reference.stat().st_size if self.reference else payload.size


def dqr_upload(*options: str, bin: Path = BIN) -> Callable[[str, Payload, int, Path], list[str]]:
    def command(url: str, payload: Payload, revision: int, _: Path) -> list[str]:
        line = dqr_upload_command(url, "-q", *options, str(payload.path), revision=revision)
        return [str(bin / "dqr-upload"), *line[1:]]

    return command


def reference_metadata(payload: Payload, revision: int) -> dict[str, str]:
    return report_metadata(
        filename=payload.reference.name, kind=payload.kind, graceid=GRACEID, revision=revision
    )


def tus_js(url: str, payload: Payload, revision: int, _: Path) -> list[str]:
    settings = {
        "endpoint": f"{url}/files/",
        "path": str(payload.reference),
        "metadata": reference_metadata(payload, revision),
    }
    return ["node", str(JS_DIR / "tus-upload.cjs"), json.dumps(settings)]


def tus_js_parallel(streams: int) -> Callable[[str, Payload, int, Path], list[str]]:
    """tus-js-client's ``parallelUploads``: the payload in ``streams`` equal
    partial uploads at once, each one PATCH, then a final upload (the
    reference for ``dqr-upload --parallel``: the least a client does)."""

    def command(url: str, payload: Payload, revision: int, _: Path) -> list[str]:
        metadata = reference_metadata(payload, revision)
        settings = {
            "endpoint": f"{url}/files/",
            "path": str(payload.reference),
            "metadata": metadata,
            "parallelUploads": streams,
            "metadataForPartialUploads": metadata,
        }
        return ["node", str(JS_DIR / "tus-upload.cjs"), json.dumps(settings)]

    return command


def tuspy(url: str, payload: Payload, revision: int, _: Path) -> list[str]:
    options = {
        "endpoint": f"{url}/files/",
        "path": str(payload.reference),
        "chunk": 8 * MiB,
        "metadata": reference_metadata(payload, revision),
    }
    return [str(BIN / "python"), "-c", TUSPY_SCRIPT, json.dumps(options)]


CLIENTS = {
    "dqr-upload": Client("dqr-upload", 1, dqr_upload(), options=()),
    "dqr-upload-nocrc": Client(
        "dqr-upload --no-checksum", 1, dqr_upload("--no-checksum"), options=("--no-checksum",)
    ),
    "dqr-upload-known": Client(
        "dqr-upload, server known", 1, dqr_upload(), knows_server=True, options=()
    ),
    "dqr-upload-p4": Client(
        "dqr-upload --parallel 4",
        4,
        dqr_upload("--parallel", "4"),
        options=("--parallel", "4"),
    ),
    "dqr-upload-auto": Client(
        "dqr-upload, streams learnt from 2 uploads", 4, dqr_upload(), warmups=2, options=()
    ),
    "tus-js": Client("tus-js-client, one PATCH", 1, tus_js, reference=True),
    "tus-js-p4": Client("tus-js-client, 4 parallel uploads", 4, tus_js_parallel(4), reference=True),
    "tuspy": Client("tuspy, 8 MiB chunks", 1, tuspy, reference=True),
}
DEFAULT_CLIENTS = ["dqr-upload", "dqr-upload-p4", "tus-js", "tuspy"]


def baseline(client: Client, bin: Path) -> Client:
    """``client`` (a dqr-upload row) run with another install's dqr-upload
    (``bin``: an earlier release, say), in the same rounds."""
    assert client.options is not None
    return replace(
        client, name=f"baseline {client.name}", command=dqr_upload(*client.options, bin=bin)
    )


def remember_server(url: str, port: int, cache: Path) -> None:
    """Leave in ``cache`` what dqr-upload remembers of the server at ``url``
    after an upload (its answer to OPTIONS, asked here directly, not over the link)."""
    import requests

    from dqrxfer.capabilities import RememberedCapabilities
    from dqrxfer.transport import TusClient

    with requests.Session() as session:
        capabilities = TusClient(session, f"http://127.0.0.1:{port}/files/").capabilities()
    path = cache / "dqrxfer" / "capabilities.json"
    RememberedCapabilities(path).put(f"{url.rstrip('/')}/files/", capabilities)


def warm_up(
    client: Client,
    payload: Payload,
    proxy: FaultProxy,
    cache: Path,
    env: dict[str, str],
    revision: int,
) -> None:
    """``client.warmups`` uploads of ``payload`` (other revisions) through
    ``proxy`` before the clock starts, without resets; then the link's
    resets start afresh, drawn as for every other client of the round.  The
    server's answer to OPTIONS is forgotten again (the timed upload asks it,
    as on a first contact): only what was learnt of the link is kept."""
    if not client.warmups:
        return
    faults = proxy.faults
    proxy.faults = replace(faults, cut_link_every=None)
    try:
        for number in range(client.warmups):
            command = client.command(proxy.url, payload, revision + 1 + number, cache)
            subprocess.run(command, env=env, cwd=JS_DIR, check=True, capture_output=True)
    finally:
        proxy.faults = faults
    from dqrxfer.capabilities import RememberedCapabilities

    path = cache / "dqrxfer" / "capabilities.json"
    RememberedCapabilities(path).put(f"{proxy.url}/files/", None)
    with proxy.link_lock:
        proxy.link_rng = random.Random(proxy.seed)
        proxy.link_bytes = 0
        proxy.next_link_reset = None
    proxy.reset_counters()


def upload_once(
    client: Client, payload: Payload, link: Link, cache: Path, seed: int, revision: int = 1
) -> Measured:
    """One upload on a fresh server behind a fresh link."""
    server = Dqrxfer().start()
    try:
        with FaultProxy(server.port, link.faults(), seed=seed) as proxy:
            command = client.command(proxy.url, payload, revision, cache)
            env = {**os.environ, "XDG_CACHE_HOME": str(cache), "DQRXFER_SERVER": ""}
            if client.knows_server:
                remember_server(proxy.url, server.port, cache)
            warm_up(client, payload, proxy, cache, env, revision)
            timeout = max(120.0, TIMEOUT_PER_MIB * client.sends(payload) / MiB)
            with tempfile.TemporaryFile() as err:
                started = time.monotonic()
                poller = VisiblePoller(server.port, revision).start()
                process = subprocess.Popen(
                    command, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=JS_DIR
                )
                try:
                    code = process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    code = -9
                exited = time.monotonic() - started
                seen = poller.wait(30)
                err.seek(0)
                stderr = err.read().decode(errors="replace")
            if code != 0 or seen is None:
                raise RuntimeError(
                    f"{client.name}: exit code {code}, report listed: {seen is not None}\n{stderr}"
                )
            counters = proxy.counters
            last = max(at for at in counters.arrivals if at <= seen)
            first = min(
                at
                for at, size in zip(counters.arrivals, counters.arrival_sizes, strict=True)
                if size >= BODY_PIECE
            )
            return Measured(
                seen - started,
                exited,
                seen - last,
                last - first,
                counters.up_bytes,
                counters.cuts,
                counters.connections,
            )
    finally:
        server.stop()


# -- the rounds and the report -------------------------------------------------------------


@dataclass
class Row:
    client: Client
    payload: Payload
    link: Link
    runs: list[Measured] = field(default_factory=list)

    def cells(self) -> tuple[str, ...]:
        times = [run.visible for run in self.runs]
        visible = statistics.median(times)
        exited = statistics.median(run.exited for run in self.runs)
        size = self.client.sends(self.payload)
        limit = self.link.limit(size, self.client.connections)
        resent = statistics.median(run.up_bytes - size for run in self.runs)
        after = statistics.median(run.after_last_byte for run in self.runs)
        flowing = statistics.median(size / run.flowing for run in self.runs)
        resets = statistics.median(run.resets for run in self.runs)
        with_resets = [limit + run.resets * self.link.reset_cost() for run in self.runs]
        ratio_with_resets = statistics.median(
            run.visible / cost for run, cost in zip(self.runs, with_resets, strict=True)
        )
        connections = statistics.median(run.connections for run in self.runs)
        return (
            self.client.name,
            f"{visible:.2f}",
            f"{min(times):.2f}-{max(times):.2f}",
            f"{exited:.2f}",
            f"{limit:.2f}",
            f"{visible / limit:.2f}",
            f"{100 * limit / visible:.0f} %",
            f"{statistics.median(with_resets):.2f}",
            f"{ratio_with_resets:.2f}",
            f"{size / visible / MB:.1f}",
            f"{flowing / MB:.1f}",
            f"{after:.2f}",
            f"{resent / MiB:.1f} ({100 * resent / size:.1f} %)",
            f"{resets:g}",
            f"{connections:g}",
        )


HEADER = (
    "client",
    "visible s",
    "range s",
    "exit s",
    "limit s",
    "x limit",
    "share of limit",
    "limit incl. resets s",
    "x limit incl. resets",
    "MB/s",
    "MB/s while flowing",
    "listed after last byte s",
    "re-sent MiB (% of payload)",
    "resets",
    "connections",
)


def run(args: argparse.Namespace, work: Path) -> None:
    missing = [name for name in args.clients if name not in CLIENTS]
    if missing:
        raise SystemExit(f"unknown client(s) {missing}: choose among {sorted(CLIENTS)}")
    if (
        any(name.startswith("tus-js") for name in args.clients)
        and not (JS_DIR / "node_modules" / "tus-js-client").is_dir()
    ):
        raise SystemExit("tus-js-client is missing: (cd tests/js && npm ci)")
    payloads = make_payloads(work, args.size_mib, args.payload, args.files)
    links = [
        Link(rtt, args.rate_mb * MB, args.total_mb * MB if args.total_mb else None, resets)
        for rtt in args.rtt
        for resets in {"no": [False], "yes": [True], "both": [False, True]}[args.resets]
    ]
    clients = [CLIENTS[name] for name in args.clients]
    if args.baseline_bin:
        clients += [
            baseline(CLIENTS[name], args.baseline_bin)
            for name in args.clients
            if CLIENTS[name].options is not None
        ]
    rows = [
        Row(client, payloads[kind], link)
        for kind in args.payload
        for link in links
        for client in clients
    ]
    cache = work / "cache"
    for number in range(args.rounds):
        order = list(rows)
        random.Random(args.seed + number).shuffle(order)
        for index, row in enumerate(order):
            measured = upload_once(
                row.client, row.payload, row.link, cache, seed=args.seed * 1000 + number
            )
            row.runs.append(measured)
            print(
                f"  round {number + 1}, {index + 1}/{len(order)}: {row.payload.name}, "
                f"{row.link.label()}: {row.client.name}: visible {measured.visible:.2f}s, "
                f"{measured.resets} resets, load {os.getloadavg()[0]:.1f}",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"\n{args.size_mib} MiB payloads, medians of {args.rounds} rounds, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    for payload in payloads.values():
        for link in links:
            selected = [row for row in rows if row.payload is payload and row.link == link]
            note = " (tus clients: the same files as a tarball)" if payload.name == "dir" else ""
            print(f"\n{payload.name}, {payload.size / MiB:.1f} MiB{note}; {link.label()}\n")
            print(table([row.cells() for row in selected], HEADER))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=100, help="payload size (100 or 1024)")
    parser.add_argument(
        "--payload", nargs="+", default=["file"], choices=["file", "tarball", "dir"]
    )
    parser.add_argument("--files", type=int, default=1000, help="files of the directory")
    parser.add_argument("--rtt", type=int, nargs="+", default=[80, 300], help="round trips, ms")
    parser.add_argument("--rate-mb", type=float, default=20, help="per-connection cap, MB/s")
    parser.add_argument("--total-mb", type=float, help="cap of all connections together, MB/s")
    parser.add_argument(
        "--resets",
        choices=["no", "yes", "both"],
        default="both",
        help="cut a connection every 30-80 MiB of the link's traffic",
    )
    parser.add_argument(
        "--clients",
        nargs="+",
        default=DEFAULT_CLIENTS,
        help=f"among {', '.join(CLIENTS)} (default: {' '.join(DEFAULT_CLIENTS)})",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--baseline-bin",
        type=Path,
        help="bin directory of another install (an earlier release): its dqr-upload "
        "runs each dqr-upload row of --clients in the same rounds, as 'baseline' rows",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="link-bench-", dir=os.environ.get("BENCH_TMP")) as tmp:
        run(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
