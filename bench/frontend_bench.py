"""Upload throughput through the Apache front end of the deployment kit
(ops/apache: TLS, mod_auth_gssapi with session cookies, the streaming proxy)
against the same upload straight to gunicorn, same run.

    BENCH_TMP=/some/scratch .venv/bin/python -m bench.frontend_bench --size-mib 1024 --runs 3

Both paths run ``dqr-upload`` as its own process with the same payload and
chunk size, against gunicorn with ops/gunicorn.conf.py and 2 workers:

* direct: ``http://127.0.0.1`` to ``serve --auth none``;
* Apache: ``https://localhost`` to Debian's Apache with the shipped virtual host,
  in front of ``serve --auth remote-user``; the robot keytab of a throw-away
  MIT realm (k5test), one Negotiate handshake, then the session cookie.

Every configuration gets fresh servers; configurations run in a random order in
each round; the table gives medians.  Beside the time, each process tree's CPU
seconds during the upload (client from ``wait4``, Apache and gunicorn from
psutil) show where the work goes on this 2-core machine.  Apache logs
mod_auth_gssapi at debug level: each authenticated request that found its
context in the session cookie logs "Already established context found"; the
other requests the access log shows with a principal did a Kerberos handshake.
The access log also counts the PATCHes.
Needs ``bash ops/dev/bootstrap.sh --test`` (apache2, mod_auth_gssapi, a KDC)
and the bench extra (psutil).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.runs import timed_run
from bench.servers import BIN, tree_cpu
from bench.tables import table
from bench.tus_bench import make_payload
from tests.support.deployment import deployed
from tests.support.kerberos import Realm
from tests.support.live import LiveServer
from tests.support.proxies import OPS
from tests.support.tus import dqr_upload_command

HERE = Path(__file__).resolve().parent


MiB = 1024 * 1024
#: mod_auth_gssapi tells, per request, whether the session cookie carried the context.
DEBUG_GSSAPI = "LogLevel warn auth_gssapi:debug"


@dataclass
class Sample:
    seconds: float
    client_cpu: float
    apache_cpu: float
    gunicorn_cpu: float
    handshakes: int = 0
    patches: int = 0


def upload(
    url: str, payload: Path, revision: int, chunk_mib: int, env: dict[str, str]
) -> tuple[float, float]:
    """Run dqr-upload; wall seconds and the client's CPU seconds."""
    command = dqr_upload_command(
        url,
        *("-q", "--chunk-size", str(chunk_mib), str(payload)),
        revision=revision,
        program=str(BIN / "dqr-upload"),
    )
    run = timed_run(command, env)
    return run.seconds, run.cpu


@contextmanager
def scratch(work: Path, name: str) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def direct(realm: Realm, work: Path, payload: Path, revision: int, chunk_mib: int) -> Sample:
    with scratch(work, "direct") as directory:
        server = LiveServer(
            directory / "data",
            extra_args=["--gunicorn-config", str(OPS / "gunicorn.conf.py"), "--auth", "none"],
        )
        (directory / "data").mkdir()
        server.start()
        try:
            env = {**os.environ, "DQRXFER_CACHE_DIR": str(directory / "cache")}
            assert server.process is not None
            before = tree_cpu(server.process.pid)
            seconds, client = upload(server.url, payload, revision, chunk_mib, env)
            return Sample(seconds, client, 0.0, tree_cpu(server.process.pid) - before)
        finally:
            server.stop()


def through_apache(
    realm: Realm, work: Path, payload: Path, revision: int, chunk_mib: int
) -> Sample:
    with (
        scratch(work, "apache") as directory,
        deployed(realm, directory / "data", apache_config=[DEBUG_GSSAPI]) as site,
    ):
        env = realm.client_env(
            KRB5_CLIENT_KTNAME=str(realm.llo_robot_keytab),
            REQUESTS_CA_BUNDLE=str(site.apache.cert),
            DQRXFER_CACHE_DIR=str(directory / "cache"),
        )
        env["KRB5CCNAME"] = "MEMORY:bench"
        assert site.server.process is not None and site.apache.process is not None
        gunicorn_before = tree_cpu(site.server.process.pid)
        apache_before = tree_cpu(site.apache.process.pid)
        seconds, client = upload(site.url, payload, revision, chunk_mib, env)
        sample = Sample(
            seconds,
            client,
            tree_cpu(site.apache.process.pid) - apache_before,
            tree_cpu(site.server.process.pid) - gunicorn_before,
        )
        log = (site.apache.root / "dqrxfer-access.log").read_text().splitlines()
        sample.patches = sum(1 for line in log if '"PATCH ' in line)
        errors = site.apache.error_log().splitlines()
        authenticated = sum(1 for line in log if line.split()[2] != "-")
        from_session = sum(1 for line in errors if "Already established context found" in line)
        sample.handshakes = authenticated - from_session
        return sample


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--chunk-mib", type=int, nargs="+", default=[8, 64], help="dqr-upload --chunk-size values"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="frontend-bench-", dir=os.environ.get("BENCH_TMP")))
    realm = Realm.start()
    try:
        payload = work / "payload.bin"
        make_payload(payload, args.size_mib * MiB)
        revisions = iter(range(1, 1_000_000))
        configs: dict[str, Callable[[], Sample]] = {}
        for chunk in args.chunk_mib:
            configs[f"direct to gunicorn, {chunk} MiB chunks"] = lambda chunk=chunk: direct(
                realm, work, payload, next(revisions), chunk
            )
            configs[f"through Apache, {chunk} MiB chunks"] = lambda chunk=chunk: through_apache(
                realm, work, payload, next(revisions), chunk
            )
        results: dict[str, list[Sample]] = {name: [] for name in configs}
        names = list(configs)
        rng = random.Random(1)
        for run in range(args.runs):
            rng.shuffle(names)
            for name in names:
                sample = configs[name]()
                results[name].append(sample)
                print(f"  round {run + 1}: {name}: {sample}", file=sys.stderr)
        rows = []
        for name, samples in results.items():
            seconds = statistics.median(s.seconds for s in samples)

            def median(attribute: str, samples: list[Sample] = samples) -> float:
                return statistics.median(getattr(s, attribute) for s in samples)

            rows.append(
                (
                    name,
                    f"{seconds:.2f}",
                    f"{args.size_mib * MiB / seconds / 1e6:.0f}",
                    f"{median('client_cpu'):.1f}",
                    f"{median('apache_cpu'):.1f}" if "Apache" in name else "-",
                    f"{median('gunicorn_cpu'):.1f}",
                    f"{median('handshakes'):.0f} / {median('patches'):.0f}"
                    if "Apache" in name
                    else "-",
                )
            )
        print(
            f"\n{args.size_mib} MiB, median of {args.runs} runs, "
            f"load average at the end {os.getloadavg()[0]:.1f}\n"
        )
        print(
            table(
                rows,
                (
                    "path",
                    "seconds",
                    "MB/s",
                    "client CPU s",
                    "Apache CPU s",
                    "gunicorn CPU s",
                    "handshakes / PATCHes",
                ),
            )
        )
    finally:
        realm.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
