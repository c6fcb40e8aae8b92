"""Reports: finalizing a tarball, and the links lookup at the database.

finalize
    A plain tar of ``--files`` files (random, incompressible content, sizes
    spread around the mean) adding up to ``--size`` bytes, written to the
    uploads directory.  Each round, in a new random order, on the same disk:

    * ``tar -xf``: GNU tar extracting it into a fresh directory;
    * ``tar -xf + sync``: the same, then ``sync`` (what makes it durable);
    * ``dqrxfer``: ``finalize_upload`` on it, as the server runs it after the
      last PATCH: whole-payload SHA-256 verified (in a thread, beside the
      extraction), every header checked, every file extracted and hashed,
      the tree made durable (one ``syncfs``) and swapped in, rows written;
    * ``dqrxfer, fsync never``: the same with ``fsync = "never"`` (no ``syncfs``).

    Medians of ``--runs`` rounds; the trees are removed between runs (and the
    page cache is left as it is: the tarball was just uploaded, so it is warm
    for every contender alike).

small
    ``--count`` small files (``--size`` bytes each, 64 KiB by default)
    finalized one after the other in this process, as the server does after
    each one's last PATCH (hash, hard link and directory fsync, the place
    and the record in SQLite), with the default ``fsync = "complete"`` (the
    record's commit durable: ``synchronous=FULL``) and with ``"never"``:
    median wall-clock and CPU time per upload over ``--runs`` rounds.  The
    finalization alone: the HTTP side is ``tus_bench.py --only small``.

lookup
    ``--reports`` reports over ``--reports / 10`` events in SQLite and in
    PostgreSQL (bulk inserts through the Alembic schema), then the query the
    links API runs for one graceid (``server/api/queries.event_reports``)
    for random graceids, one after the other: p50 and p99 over ``--lookups``
    lookups, medians over ``--runs``.  (The same lookup over HTTP, through
    gunicorn, is ``bench/links_bench.py``.)

    .venv/bin/python -m bench.reports_bench finalize --runs 3
    .venv/bin/python -m bench.reports_bench small --runs 5
    .venv/bin/python -m bench.reports_bench lookup --runs 3
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert, text

from dqrxfer.server.config import Settings, load_settings
from dqrxfer.server.db import Database, Event, Report, Upload, migrate
from dqrxfer.server.reports.finalize import finalize_upload
from dqrxfer.server.tus.store import UploadInfo

MiB = 1024 * 1024


# -- finalize ------------------------------------------------------------------------


def make_tarball(path: Path, files: int, size: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    mean = size // files
    sizes = [max(1, int(rng.uniform(0.2, 1.8) * mean)) for _ in range(files)]
    scale = size / sum(sizes)
    sizes = [max(1, int(s * scale)) for s in sizes]
    block = os.urandom(4 * MiB)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for index, length in enumerate(sizes):
            info = tarfile.TarInfo(f"tier{index % 4}/task{index // 100:03d}/file{index:05d}.png")
            info.size = length
            info.mtime = 1_700_000_000
            length = min(length, len(block))
            offset = rng.randrange(0, len(block) - length + 1)
            data = block[offset : offset + length]
            info.size = length
            archive.addfile(info, _Reader(data))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.position + size
        chunk = self.data[self.position : end]
        self.position += len(chunk)
        return bytes(chunk)


def sha256_hex(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_tar(tarball: Path, target: Path, sync: bool) -> tuple[float, float]:
    """Wall-clock and CPU seconds of GNU tar (and sync)."""
    target.mkdir()
    cpu = _children_cpu()
    started = time.perf_counter()
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(target)], check=True)
    if sync:
        subprocess.run(["sync"], check=True)
    return time.perf_counter() - started, _children_cpu() - cpu


def server_data(base: Path, name: str, fsync: str) -> tuple[Settings, Database]:
    """The settings of a fresh data directory ``base/name`` (embedded default
    but for ``fsync``) and its database, at the code's schema."""
    data_dir = base / name
    config = base / f"{name}.toml"
    config.write_text(f'data_dir = "{data_dir}"\nfsync = "{fsync}"\n')
    settings = load_settings(config, data_dir)
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url)
    migrate.upgrade(database.engine)
    return settings, database


def report_metadata(filename: str, kind: str) -> dict[str, str]:
    return {
        "project": "O4",
        "graceid": "S230518h",
        "uploader": "llo",
        "revision": "1",
        "filename": filename,
        "kind": kind,
    }


def time_finalize(
    tarball: Path, base: Path, digest: str, fsync: str, round_id: str
) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads) of one finalization."""
    settings, database = server_data(base, f"dq-{round_id}", fsync)
    try:
        upload_id = uuid.uuid4().hex
        payload = settings.uploads_dir / upload_id
        os.link(tarball, payload)
        metadata = {**report_metadata("report.tar", "tar"), "sha256": digest}
        length = payload.stat().st_size
        with database.session(write=True) as session:
            session.add(Upload(id=upload_id, project="O4", kind="tar", state="receiving"))
        info = UploadInfo(id=upload_id, length=length, offset=length, metadata=metadata)
        cpu = time.process_time()
        started = time.perf_counter()
        finalize_upload(database, settings, info, payload)
        elapsed = time.perf_counter() - started, time.process_time() - cpu
        landed = settings.projects["O4"].reports_root / "S230518h_dir/S230518h_llo_1"
        count = sum(len(files) for _, _, files in os.walk(landed))
        assert count > 0, "nothing was published"
        return elapsed
    finally:
        database.dispose()


def finalize(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="dqrxfer-bench-", dir=args.dir))
    try:
        tarball = base / "report.tar"
        started = time.perf_counter()
        make_tarball(tarball, args.files, args.size)
        print(
            f"tarball: {args.files} files, {tarball.stat().st_size / MiB:.0f} MiB "
            f"(made in {time.perf_counter() - started:.1f} s) in {base}",
            flush=True,
        )
        digest = sha256_hex(tarball)
        contenders: dict[str, Callable[[str], tuple[float, float]]] = {
            "tar -xf": lambda r: time_tar(tarball, base / f"tar-{r}", sync=False),
            "tar -xf + sync": lambda r: time_tar(tarball, base / f"tars-{r}", sync=True),
            "dqrxfer": lambda r: time_finalize(tarball, base, digest, "complete", r),
            "dqrxfer, fsync never": lambda r: time_finalize(
                tarball, base, digest, "never", f"n{r}"
            ),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        for run in range(args.runs):
            order = list(contenders)
            random.shuffle(order)
            for name in order:
                subprocess.run(["sync"], check=True)
                elapsed = contenders[name](f"{run}")
                results[name].append(elapsed)
                print(
                    f"run {run + 1}: {name}: {elapsed[0]:.2f} s (CPU {elapsed[1]:.2f} s), "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                for leftover in base.iterdir():
                    if leftover.name != "report.tar":
                        if leftover.is_dir():
                            shutil.rmtree(leftover)
                        else:
                            leftover.unlink()
        print()
        wall = {name: statistics.median(t[0] for t in times) for name, times in results.items()}
        cpu = {name: statistics.median(t[1] for t in times) for name, times in results.items()}
        print("| contender | wall, median | wall, runs | over tar -xf | CPU, median |")
        print("|---|---|---|---|---|")
        for name, times in results.items():
            runs = ", ".join(f"{t[0]:.2f}" for t in times)
            ratio = wall[name] / wall["tar -xf"]
            print(f"| {name} | {wall[name]:.2f} s | {runs} | {ratio:.2f}x | {cpu[name]:.2f} s |")
        print(f"\nload average at the end: {os.getloadavg()}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- small ---------------------------------------------------------------------------


def time_small(base: Path, fsync: str, count: int, size: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of finalizing one of ``count`` small
    files (the first tenth, warming up caches and the database, not counted)."""
    settings, database = server_data(base, f"small-{fsync}-{uuid.uuid4().hex[:8]}", fsync)
    body = os.urandom(size)
    walls, cpus = [], []
    try:
        for index in range(count):
            upload_id = uuid.uuid4().hex
            payload = settings.uploads_dir / upload_id
            payload.write_bytes(body)
            metadata = report_metadata(f"file-{index % 100}.bin", "file")
            with database.session(write=True) as session:
                session.add(
                    Upload(
                        id=upload_id,
                        project="O4",
                        graceid="S230518h",
                        site="llo",
                        revision=1,
                        kind="file",
                        state="receiving",
                    )
                )
            info = UploadInfo(id=upload_id, length=size, offset=size, metadata=metadata)
            cpu, started = time.process_time(), time.perf_counter()
            finalize_upload(database, settings, info, payload)
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
    finally:
        database.dispose()
    warm = count // 10
    return statistics.median(walls[warm:]), statistics.median(cpus[warm:])


def small(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="dqrxfer-bench-", dir=args.dir))
    try:
        results: dict[str, list[tuple[float, float]]] = {"complete": [], "never": []}
        for run in range(args.runs):
            order = list(results)
            random.shuffle(order)
            for fsync in order:
                subprocess.run(["sync"], check=True)
                wall, cpu = time_small(base, fsync, args.count, args.size)
                results[fsync].append((wall, cpu))
                print(
                    f"run {run + 1}: fsync {fsync}: {wall * 1000:.3f} ms "
                    f"(CPU {cpu * 1000:.3f} ms) per upload, load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        print()
        print("| fsync | wall per upload, median | runs | CPU per upload, median |")
        print("|---|---|---|---|")
        for fsync, times in results.items():
            wall = statistics.median(t[0] for t in times) * 1000
            cpu = statistics.median(t[1] for t in times) * 1000
            runs = ", ".join(f"{t[0] * 1000:.2f}" for t in times)
            print(f"| {fsync} | {wall:.3f} ms | {runs} | {cpu:.3f} ms |")
        print(f"\nload average at the end: {os.getloadavg()}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- lookup --------------------------------------------------------------------------


def fill(url: str, reports: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    database = Database(url)
    try:
        migrate.upgrade(database.engine)
        events = max(1, reports // 10)
        graceids = [f"S{230000 + index // 26:06d}{chr(97 + index % 26)}" for index in range(events)]
        start = datetime(2023, 5, 1, tzinfo=UTC)
        with database.engine.begin() as connection:
            connection.execute(
                insert(Event),
                [
                    {"id": i + 1, "graceid": g, "created": start + timedelta(minutes=i)}
                    for i, g in enumerate(graceids)
                ],
            )
            rows = []
            for index in range(reports):
                event = index % events
                site = ("llo", "lho", "virgo", "kagra")[index // events % 4]
                revision = index // (events * 4)
                moment = start + timedelta(minutes=event, seconds=rng.randrange(3600))
                path = f"{graceids[event]}_dir/{graceids[event]}_{site}_{revision}"
                rows.append(
                    {
                        "event_id": event + 1,
                        "project": "O4",
                        "site": site,
                        "revision": revision,
                        "path": path,
                        "url": f"https://dqr.example.org/O4/{path}/",
                        "created": moment,
                        "updated": moment,
                        "file_count": 40,
                        "total_bytes": 5 * MiB,
                    }
                )
            connection.execute(insert(Report), rows)
        return graceids
    finally:
        database.dispose()


def time_lookups(url: str, graceids: list[str], lookups: int) -> tuple[float, float, float, str]:
    """p50 and p99 of the wall-clock time of a lookup, p99 of its CPU time (this
    thread: what the lookup costs without the waits for a core of a busy
    machine), and the database's plan for it."""
    from dqrxfer.server.api.queries import event_reports

    database = Database(url)
    rng = random.Random(3)
    durations, cpu = [], []
    try:
        with database.session() as session:
            for graceid in graceids[:50]:  # warm the connection and the caches
                event_reports(session, graceid)
        for _ in range(lookups):
            graceid = rng.choice(graceids)
            started, started_cpu = time.perf_counter(), time.thread_time()
            with database.session() as session:
                rows = event_reports(session, graceid)
            durations.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - started_cpu)
            assert rows, graceid
        plan = explain(database, graceids[0])
    finally:
        database.dispose()
    durations.sort()
    cpu.sort()
    p99 = int(len(durations) * 0.99) - 1
    return statistics.median(durations), durations[p99], cpu[p99], plan


def explain(database: Database, graceid: str) -> str:
    query = (
        "SELECT reports.* FROM reports JOIN events ON events.id = reports.event_id "
        "WHERE events.graceid = :graceid ORDER BY reports.site, reports.revision, reports.project"
    )
    prefix = "EXPLAIN QUERY PLAN " if database.engine.dialect.name == "sqlite" else "EXPLAIN "
    with database.engine.connect() as connection:
        rows = connection.execute(text(prefix + query), {"graceid": graceid}).all()
    return "\n".join(str(row[-1]) for row in rows)


def lookup(args: argparse.Namespace) -> None:
    backends: dict[str, list[tuple[float, float, float, str]]] = {}
    for run in range(args.runs):
        base = Path(tempfile.mkdtemp(prefix="dqrxfer-lookup-"))
        sqlite_url = f"sqlite:///{base / 'db.sqlite'}"
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(args.postgres)
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        postgres_url = f"{args.postgres}?options=-csearch_path%3D{schema}"
        try:
            for name, url in (("SQLite", sqlite_url), ("PostgreSQL", postgres_url)):
                graceids = fill(url, args.reports)
                result = time_lookups(url, graceids, args.lookups)
                backends.setdefault(name, []).append(result)
                print(
                    f"run {run + 1}: {name}: p50 {result[0] * 1e3:.3f} ms, "
                    f"p99 {result[1] * 1e3:.3f} ms, CPU p99 {result[2] * 1e3:.3f} ms, "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
            shutil.rmtree(base, ignore_errors=True)
    print(f"\n{args.reports} reports; {args.lookups} lookups a run; medians of {args.runs} runs\n")
    print("| database | p50 | p99 | p99 per run | CPU p99 |")
    print("|---|---|---|---|---|")
    for name, results in backends.items():
        p50 = statistics.median(r[0] for r in results) * 1e3
        p99 = statistics.median(r[1] for r in results) * 1e3
        cpu99 = statistics.median(r[2] for r in results) * 1e3
        runs = ", ".join(f"{r[1] * 1e3:.2f}" for r in results)
        print(f"| {name} | {p50:.3f} ms | {p99:.3f} ms | {runs} | {cpu99:.3f} ms |")
    for name, results in backends.items():
        print(f"\n{name} plan:\n{results[-1][3]}")
    print(f"\nload average at the end: {os.getloadavg()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("finalize", help="finalizing a tarball vs GNU tar -xf")
    one.add_argument("--files", type=int, default=10_000)
    one.add_argument("--size", type=int, default=1024 * MiB, help="bytes of file content")
    one.add_argument("--runs", type=int, default=3)
    one.add_argument("--dir", help="where to work (default: the temporary directory)")
    few = commands.add_parser("small", help="finalizing small files one after the other")
    few.add_argument("--count", type=int, default=300)
    few.add_argument("--size", type=int, default=64 * 1024, help="bytes per file")
    few.add_argument("--runs", type=int, default=5)
    few.add_argument("--dir", help="where to work (default: the temporary directory)")
    two = commands.add_parser("lookup", help="links lookup for one graceid, SQLite and PostgreSQL")
    two.add_argument("--reports", type=int, default=100_000)
    two.add_argument("--lookups", type=int, default=5000)
    two.add_argument("--runs", type=int, default=3)
    two.add_argument(
        "--postgres",
        default=os.environ.get(
            "DQRXFER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    if args.command == "finalize":
        finalize(args)
    elif args.command == "small":
        small(args)
    else:
        lookup(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
