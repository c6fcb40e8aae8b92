"""Links API: latency of ``GET /api/v1/events/<graceid>/reports`` and requests/s
with 16 concurrent clients, on SQLite and PostgreSQL, with 10,000 events and
100,000 reports.

For each database: fill it (bulk inserts, through the Alembic schema), start
``dqrxfer-server serve`` (gunicorn, 2 workers x 8 threads), then

* latency: one keep-alive client asks for random events one after the other;
  the client's wall time, the server's own time and its CPU time (the API's
  ``Server-Timing: app;dur=..., cpu;dur=...`` header: parameters, database,
  JSON, validators) give p50 and p99.  Wall minus CPU is waiting: for the
  database's answer, or for a core on a busy machine;
* throughput: wrk (Debian package ``wrk``) with 16 connections for a fixed
  time, once with plain requests, once with conditional ones
  (``If-None-Match`` with each event's current ETag: every answer is a 304).

Each figure is the median of ``--runs`` runs.  The load generator shares the
machine (2 cores here) with the server: requests/s are a floor.

    .venv/bin/python -m bench.links_bench --runs 3
    .venv/bin/python -m bench.links_bench --backends sqlite --events 1000 --runs 1   # quick

PostgreSQL: ``--postgres URL`` (default the test database on 127.0.0.1); each
run uses a schema of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert, text

from bench.servers import Dqrxfer
from dqrxfer.server.db import Database, Event, Report, migrate

SITES = (("llo", 3), ("lho", 3), ("virgo", 2), ("kagra", 2))  # revisions per site: 10 reports
BASE = datetime(2023, 5, 18, tzinfo=UTC)
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def graceid(index: int) -> str:
    """Distinct valid superevent ids: S230000a, S230000b, ..., S230001a, ..."""
    return f"S{230000 + index // 26:06d}{chr(ord('a') + index % 26)}"


def fill(url: str, events: int) -> int:
    """Create the schema and ``events`` events with 10 reports each; returns the report count."""
    database = Database(url)
    try:
        migrate.upgrade(database.engine)
        event_rows = [
            {"id": i + 1, "graceid": graceid(i), "created": BASE + timedelta(minutes=i)}
            for i in range(events)
        ]
        report_rows = []
        for i in range(events):
            when = BASE + timedelta(minutes=i)
            for site, revisions in SITES:
                for revision in range(1, revisions + 1):
                    updated = when + timedelta(minutes=revision * 7 + len(site))
                    path = f"{graceid(i)}_dir/{graceid(i)}_{site}_{revision}"
                    report_rows.append(
                        {
                            "event_id": i + 1,
                            "project": "O4",
                            "site": site,
                            "revision": revision,
                            "path": path,
                            "url": f"/reports/O4/{path}/",
                            "created": updated - timedelta(seconds=40),
                            "updated": updated,
                            "file_count": 40 + revision,
                            "total_bytes": 18_000_000 + revision,
                        }
                    )
        with database.engine.begin() as connection:
            for start in range(0, len(event_rows), 5000):
                connection.execute(insert(Event), event_rows[start : start + 5000])
            for start in range(0, len(report_rows), 5000):
                connection.execute(insert(Report), report_rows[start : start + 5000])
            if database.engine.dialect.name == "postgresql":
                # What autovacuum would have done by the time a table holds this much.
                connection.execute(text("ANALYZE"))
        return len(report_rows)
    finally:
        database.dispose()


@dataclass
class Backend:
    name: str
    url: str
    cleanup: object = None


def sqlite_backend(work: Path) -> Backend:
    return Backend("SQLite", f"sqlite:///{work / 'links.sqlite'}")


def postgres_backend(base: str) -> Backend:
    schema = f"bench_links_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    separator = "&" if "?" in base else "?"
    return Backend("PostgreSQL", f"{base}{separator}options=-csearch_path%3D{schema}", drop)


def start_server(url: str, work: Path, workers: int, threads: int) -> Dqrxfer:
    config = work / f"server-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(f"database_url = {json.dumps(url)}\n")
    return Dqrxfer(workers=workers, threads=threads, extra=["--config", str(config)]).start()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


TIMING = re.compile(r"app;dur=([0-9.]+), cpu;dur=([0-9.]+)")


def latencies(port: int, ids: list[str], requests: int, seed: int) -> dict[str, float]:
    """One keep-alive client, ``requests`` lookups of random events, after a warm-up."""
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    wall: list[float] = []
    server: list[float] = []
    cpu: list[float] = []
    try:
        for number in range(requests + 200):
            path = f"/api/v1/events/{rng.choice(ids)}/reports"
            started = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status == 200 and body.startswith(b"{"), (response.status, body)
            if number < 200:
                continue  # warm-up: connection pools, caches
            wall.append(elapsed)
            match = TIMING.search(response.getheader("Server-Timing") or "")
            assert match, "no Server-Timing header"
            server.append(float(match.group(1)))
            cpu.append(float(match.group(2)))
    finally:
        connection.close()
    return {
        "server_p50": percentile(server, 0.50),
        "server_p99": percentile(server, 0.99),
        "cpu_p50": percentile(cpu, 0.50),
        "cpu_p99": percentile(cpu, 0.99),
        "client_p50": percentile(wall, 0.50),
        "client_p99": percentile(wall, 0.99),
    }


WRK_SCRIPT = """
local ids = {%(ids)s}
local etags = {%(etags)s}
local conditional = %(conditional)s
local counter = 0
request = function()
  counter = counter + 1
  local i = (counter * 7919) %% #ids + 1
  local headers = {}
  if conditional then headers["If-None-Match"] = etags[i] end
  return wrk.format("GET", "/api/v1/events/" .. ids[i] .. "/reports", headers)
end
"""


def etags(port: int, ids: list[str]) -> list[str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    found = []
    try:
        for event in ids:
            connection.request("GET", f"/api/v1/events/{event}/reports")
            response = connection.getresponse()
            response.read()
            found.append(response.getheader("ETag") or "")
        # The conditional request must really be answered with a 304.
        connection.request(
            "GET", f"/api/v1/events/{ids[0]}/reports", headers={"If-None-Match": found[0]}
        )
        response = connection.getresponse()
        response.read()
        assert response.status == 304, response.status
    finally:
        connection.close()
    return found


def wrk(port: int, ids: list[str], tags: list[str], conditional: bool, args, work: Path) -> float:
    script = work / f"links-{'cond' if conditional else 'plain'}.lua"
    script.write_text(
        WRK_SCRIPT
        % {
            "ids": ", ".join(json.dumps(i) for i in ids),
            "etags": ", ".join(json.dumps(t) for t in tags),
            "conditional": "true" if conditional else "false",
        }
    )
    completed = subprocess.run(
        [
            "wrk",
            f"-t{args.wrk_threads}",
            f"-c{args.concurrency}",
            f"-d{args.duration}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=args.duration + 120,
        check=True,
    )
    if "Non-2xx or 3xx responses" in completed.stdout:
        raise RuntimeError(f"wrk saw errors:\n{completed.stdout}")
    match = re.search(r"Requests/sec:\s+([0-9.]+)", completed.stdout)
    assert match, completed.stdout
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, metavar="URL")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=3000, help="latency samples per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2

    results = {}
    with tempfile.TemporaryDirectory(prefix="links-bench-") as tmp:
        work = Path(tmp)
        for name in args.backends.split(","):
            backend = sqlite_backend(work) if name == "sqlite" else postgres_backend(args.postgres)
            try:
                started = time.perf_counter()
                reports = fill(backend.url, args.events)
                print(
                    f"{backend.name}: {args.events} events, {reports} reports filled in "
                    f"{time.perf_counter() - started:.1f} s",
                    flush=True,
                )
                rng = random.Random(7)
                sample = [graceid(rng.randrange(args.events)) for _ in range(1000)]
                runs = []
                for run in range(args.runs):
                    server = start_server(backend.url, work, args.workers, args.threads)
                    try:
                        numbers = latencies(server.port, sample, args.requests, seed=run)
                        tags = etags(server.port, sample)
                        numbers["rps_plain"] = wrk(server.port, sample, tags, False, args, work)
                        numbers["rps_304"] = wrk(server.port, sample, tags, True, args, work)
                    finally:
                        server.stop()
                    print(
                        f"  run {run + 1}: "
                        + json.dumps({k: round(v, 2) for k, v in numbers.items()}),
                        flush=True,
                    )
                    runs.append(numbers)
                results[backend.name] = {
                    key: statistics.median(run[key] for run in runs) for key in runs[0]
                }
            finally:
                if callable(backend.cleanup):
                    backend.cleanup()

    print()
    print(
        "| database | server p50 | server p99 | server CPU p50 | server CPU p99 | client p50 "
        f"| client p99 | req/s ({args.concurrency} clients) | req/s, all 304 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, numbers in results.items():
        print(
            f"| {name} | {numbers['server_p50']:.2f} ms | {numbers['server_p99']:.2f} ms | "
            f"{numbers['cpu_p50']:.2f} ms | {numbers['cpu_p99']:.2f} ms | "
            f"{numbers['client_p50']:.2f} ms | {numbers['client_p99']:.2f} ms | "
            f"{numbers['rps_plain']:.0f} | {numbers['rps_304']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
