"""The full application's cost per small report upload, in one process.

N report uploads of 64 KiB (``--size``) go through ``create_app(settings)``'s
Flask test client: real stores and database in a temporary data directory
(``$BENCH_TMP``), the embedded default configuration and its fsync policy
(every flush round: data, names, the record's commit).  Two ways:

``post-patch``
    ``POST`` (creation) then one ``PATCH`` with the whole body;
``with-upload``
    one ``POST`` carrying the body (creation-with-upload).

Measured per upload, after a warm-up tenth: the process's CPU time
(``time.process_time``: every thread, so the hashing thread and any helper
count, as they count against a server's cores) and the wall time, plus the
CPU of the requesting thread alone (``time.thread_time``) to show what
moved to helper threads.  No gunicorn and no sockets: this is the
application's own work (Flask, werkzeug, the tus layer, hooks, validation,
finalization, the database), what ``tus_bench.py --only small`` adds
gunicorn's HTTP parsing, threads and access log to.

``--served 1 8`` adds the same uploads through ``dqrxfer-server serve``
(gunicorn, 4 workers x 8 threads, a fresh data directory per measurement)
from 1 and 8 concurrent clients over loopback: the server's CPU (its whole
process tree) per upload and uploads per second, gunicorn's parsing, threads
and access log included (needs psutil: ``pip install -e '.[bench]'``).

Each measurement runs in a fresh interpreter.  ``--baseline REV`` runs
the same measurement with git revision REV's package first on
``PYTHONPATH`` (the ``bench`` package stays this tree's), alternating with
the current tree pair by pair (the order swapped every other pair), so
both see the same machine; medians and ranges of the pairs are printed::

    .venv/bin/python -m bench.small_request_bench --baseline main --pairs 7
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODES = ("post-patch", "with-upload")


def metadata(index: int) -> str:
    fields = {
        "project": "O4",
        "graceid": "S230518h",
        "uploader": "llo",
        "revision": str(index % 1000 + 1),
        "filename": f"bench-{index}.bin",
        "kind": "file",
    }
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def measure(mode: str, count: int, size: int, workdir: Path) -> dict[str, Any]:
    """Upload ``count`` reports; per upload (after the first tenth): median
    process CPU, thread CPU and wall seconds, and where the app's code came from."""
    from dqrxfer.server import app as app_module
    from dqrxfer.server.app import create_app
    from dqrxfer.server.config import load_settings
    from dqrxfer.server.services import services

    data_dir = workdir / "data"
    app = create_app(load_settings(None, data_dir))
    client = app.test_client()
    body = os.urandom(size)
    cpus, threads, walls = [], [], []
    try:
        for index in range(count):
            headers = {
                "Tus-Resumable": "1.0.0",
                "Upload-Length": str(size),
                "Upload-Metadata": metadata(index),
            }
            cpu, thread, wall = time.process_time(), time.thread_time(), time.perf_counter()
            if mode == "with-upload":
                headers["Content-Type"] = "application/offset+octet-stream"
                reply = client.post("/files/", headers=headers, data=body)
                assert reply.status_code == 201, (reply.status_code, reply.get_data())
                assert reply.headers.get("Upload-Offset") == str(size), reply.headers
            else:
                reply = client.post("/files/", headers=headers)
                assert reply.status_code == 201, (reply.status_code, reply.get_data())
                location = reply.headers["Location"]
                path = "/" + location.split("://", 1)[-1].split("/", 1)[1]
                reply = client.patch(
                    path,
                    headers={
                        "Tus-Resumable": "1.0.0",
                        "Upload-Offset": "0",
                        "Content-Type": "application/offset+octet-stream",
                    },
                    data=body,
                )
                assert reply.status_code == 204, (reply.status_code, reply.get_data())
            walls.append(time.perf_counter() - wall)
            threads.append(time.thread_time() - thread)
            cpus.append(time.process_time() - cpu)
    finally:
        services(app).close()
    warm = count // 10
    return {
        "cpu": statistics.median(cpus[warm:]),
        "thread": statistics.median(threads[warm:]),
        "wall": statistics.median(walls[warm:]),
        "cpu_mean": statistics.fmean(cpus[warm:]),
        "code": str(app_module.__file__),
    }


def served(
    mode: str, clients: int, count: int, size: int, pythonpath: Path | None
) -> dict[str, Any]:
    """``count`` uploads from ``clients`` clients through a fresh gunicorn
    server: its CPU seconds per upload and the uploads per second."""
    from bench.servers import Dqrxfer
    from bench.tus_bench import small_uploads

    server = Dqrxfer(workers=4, threads=8, pythonpath=str(pythonpath) if pythonpath else None)
    server.start()
    try:
        before = server.cpu_seconds()
        rate = small_uploads(server, count, clients, size, mode == "with-upload")
        return {"cpu": (server.cpu_seconds() - before) / count, "rate": rate}
    finally:
        server.stop()


def baseline_tree(revision: str, tmp: Path) -> Path:
    """A directory holding the ``dqrxfer`` package as of git ``revision``."""
    from bench.tus_bench import baseline_tree as tree_of

    return tree_of(revision, tmp)


def run_child(mode: str, count: int, size: int, pythonpath: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(pythonpath), env.get("PYTHONPATH")) if part
        )
    command = [sys.executable, "-m", "bench.small_request_bench", "--child", mode]
    command += ["--count", str(count), "--size", str(size)]
    done = subprocess.run(
        command, cwd=HERE.parent, env=env, check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if pythonpath is not None:
        assert result["code"].startswith(str(pythonpath)), ("baseline not imported", result)
    else:
        assert not result["code"].startswith(str(Path(tempfile.gettempdir()))), result
    return result


def child(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="dqrxfer-small-", dir=os.environ.get("BENCH_TMP")))
    try:
        print(json.dumps(measure(args.child, args.count, args.size, workdir)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def summary(label: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{label} {statistics.median(ms):.3f} ms ({min(ms):.3f}-{max(ms):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="uploads per measurement")
    parser.add_argument("--size", type=int, default=64 * 1024, help="bytes per upload")
    parser.add_argument("--pairs", type=int, default=5, help="measurements of each contender")
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both")
    parser.add_argument("--baseline", metavar="REV", help="git revision to compare with")
    parser.add_argument(
        "--served",
        type=int,
        nargs="*",
        default=[],
        metavar="CLIENTS",
        help="also through gunicorn, with each of these client counts",
    )
    parser.add_argument(
        "--served-only", action="store_true", help="skip the in-process measurements"
    )
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    modes = MODES if args.mode == "both" else (args.mode,)
    tmp = Path(tempfile.mkdtemp(prefix="dqrxfer-small-bench-", dir=os.environ.get("BENCH_TMP")))
    try:
        lineup: list[tuple[str, Path | None]] = [("this tree", None)]
        if args.baseline:
            lineup.insert(0, (f"at {args.baseline}", baseline_tree(args.baseline, tmp)))
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        served_results: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
        for pair in range(args.pairs):
            for mode in modes:
                order = lineup if pair % 2 == 0 else lineup[::-1]
                for name, path in [] if args.served_only else order:
                    result = run_child(mode, args.count, args.size, path)
                    results.setdefault((mode, name), []).append(result)
                    cpu, thread, wall = (result[k] * 1000 for k in ("cpu", "thread", "wall"))
                    print(
                        f"pair {pair + 1} {mode:11} {name:14} CPU {cpu:.3f} ms "
                        f"(thread {thread:.3f}) wall {wall:.3f} ms per upload, "
                        f"load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
                for clients in args.served:
                    for name, path in order:
                        result = served(mode, clients, args.count, args.size, path)
                        served_results.setdefault((mode, clients, name), []).append(result)
                        print(
                            f"pair {pair + 1} {mode:11} {name:14} served, {clients} clients: "
                            f"server CPU {result['cpu'] * 1000:.3f} ms per upload, "
                            f"{result['rate']:.0f} uploads/s, load {os.getloadavg()[0]:.2f}",
                            flush=True,
                        )
        if results:
            print()
            print("| way | code | process CPU per upload | requesting thread | wall per upload |")
            print("|---|---|---|---|---|")
        for (mode, name), runs in results.items():
            cells = [
                summary("", [r[key] for r in runs]).strip() for key in ("cpu", "thread", "wall")
            ]
            print(f"| {mode} | {name} | " + " | ".join(cells) + " |")
        if served_results:
            print()
            print("| way | clients | code | server CPU per upload | uploads/s |")
            print("|---|---|---|---|---|")
            for (mode, clients, name), runs in served_results.items():
                cpu = summary("", [r["cpu"] for r in runs]).strip()
                rates = [r["rate"] for r in runs]
                print(
                    f"| {mode} | {clients} | {name} | {cpu} | {statistics.median(rates):.0f} "
                    f"({min(rates):.0f}-{max(rates):.0f}) |"
                )
        if args.baseline and results:
            for mode in modes:
                ratios = [
                    now["cpu"] / then["cpu"]
                    for now, then in zip(
                        results[(mode, "this tree")],
                        results[(mode, f"at {args.baseline}")],
                        strict=True,
                    )
                ]
                print(
                    f"{mode}: CPU this tree / baseline, per pair: median "
                    f"{statistics.median(ratios):.3f} "
                    f"({', '.join(f'{r:.3f}' for r in ratios)})"
                )
        print(f"\nload average at the end: {os.getloadavg()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
