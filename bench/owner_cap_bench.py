"""CPU of one creation under the cap on unfinished bytes, with the owner
holding N unfinished uploads (``Uploads.create`` in process: FileStore,
FileLocker, no hooks).

Runs the ``server`` package found first on ``sys.path``, so that the code of
two checkouts can be compared in turn (``PYTHONPATH=<checkout>``)::

    python bench/owner_cap_bench.py 1 8 100 1000

Prints one line per N: the median CPU time of a creation (µs; the creation
counted, the upload created, its hint written) and the range, over
``--creations`` creations, each terminated again after it is timed so that
the owner keeps N.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from dqrxfer.server.tus.datastore import UploadInfo
from dqrxfer.server.tus.hooks import TusHooks
from dqrxfer.server.tus.lifecycle import TusOptions, Uploads
from dqrxfer.server.tus.locker import FileLocker
from dqrxfer.server.tus.metrics import tus_metrics
from dqrxfer.server.tus.store import FileStore

OWNER = "robot/ldas@LIGO.ORG"


def creation_cpu(held: int, creations: int, root: Path) -> list[float]:
    store = FileStore(root / "uploads")
    uploads = Uploads(
        store,
        FileLocker(root / "locks"),
        TusHooks(),
        TusOptions(expiry=7 * 86400, max_unfinished_bytes=2**60),
        tus_metrics(),
    )
    for _ in range(held):
        store.create(UploadInfo(id="", length=64 * 1024, owner=OWNER))
    times = []
    for _ in range(creations):
        started = time.process_time()
        info = uploads.create(UploadInfo(id="", length=64 * 1024, owner=OWNER))
        times.append(time.process_time() - started)
        uploads.terminate(info)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("held", nargs="+", type=int, help="unfinished uploads the owner holds")
    parser.add_argument("--creations", type=int, default=200)
    args = parser.parse_args()
    for held in args.held:
        with tempfile.TemporaryDirectory() as scratch:
            times = creation_cpu(held, args.creations, Path(scratch))
        times = times[len(times) // 10 :]  # the first ones read every upload once
        print(
            f"{held} {statistics.median(times) * 1e6:.0f} "
            f"{min(times) * 1e6:.0f} {max(times) * 1e6:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
