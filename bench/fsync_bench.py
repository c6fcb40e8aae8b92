"""What making a finished upload durable costs: its data file, state file and
directory fsynced one after the other, or all three at once as the store does
(``dqrxfer.server.tus.syncing.fsync_together``).

Each round writes a small upload as the store does (a data file and a state
file in one directory, their writeback started), then makes it durable one
way or the other; the two ways alternate, so that both see the same load.
With ``--busy`` another thread keeps writing and fsyncing a file of its own
meanwhile, as other uploads and the database do on a busy server: then each
fsync of the one-after-the-other way tends to wait for a journal commit of
its own.

    .venv/bin/python -m bench.fsync_bench --uploads 300 --size-kib 64 [--busy]

Scratch files go to ``$BENCH_TMP`` (default: the system's temporary
directory); point it at the disk the server's data directory is on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dqrxfer.server.tus.store import _start_writeback
from dqrxfer.server.tus.syncing import fsync_directory, fsync_path, fsync_together


def one_after_the_other(data: str, state: str, directory: str) -> None:
    fsync_path(data)
    fsync_path(state)
    fsync_directory(directory)


def together(data: str, state: str, directory: str) -> None:
    fsync_together([data, state], [directory])


def write_upload(directory: Path, name: str, body: bytes) -> tuple[str, str]:
    data, state = directory / name, directory / f"{name}.info"
    with open(data, "xb") as handle:
        handle.write(body)
        handle.flush()
        if _start_writeback is not None:
            _start_writeback(handle.fileno(), 0, 0)
    with open(state, "x", encoding="utf-8") as handle:
        handle.write(f'{{"length": {len(body)}, "metadata": {{}}}}')
        handle.flush()
        if _start_writeback is not None:
            _start_writeback(handle.fileno(), 0, 0)
    return str(data), str(state)


def keep_busy(directory: Path, stop: threading.Event) -> None:
    """Write and fsync a file of 16 MiB in 256 KiB pieces, and create and
    remove a small file every 20 pieces, until ``stop``."""
    block = os.urandom(256 * 1024)
    fd = os.open(directory / "busy.bin", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        number = 0
        while not stop.is_set():
            os.pwrite(fd, block, (number % 64) * len(block))
            os.fsync(fd)
            number += 1
            if number % 20 == 0:
                small = directory / f"busy-{number}"
                small.write_bytes(b"x")
                small.unlink()
    finally:
        os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=300, help="rounds of each way")
    parser.add_argument("--size-kib", type=int, default=64)
    parser.add_argument("--busy", action="store_true", help="another writer fsyncs meanwhile")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-fsync-", dir=os.environ.get("BENCH_TMP")))
    stop = threading.Event()
    busy = threading.Thread(target=keep_busy, args=(scratch / "busy", stop), daemon=True)
    if args.busy:
        (scratch / "busy").mkdir()
        busy.start()
    ways: dict[str, Callable[[str, str, str], None]] = {
        "one after the other": one_after_the_other,
        "together": together,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    body = os.urandom(args.size_kib * 1024)
    try:
        for number in range(args.uploads):
            for name, make_durable in ways.items():
                data, state = write_upload(scratch, f"{name[0]}{number}", body)
                start = time.perf_counter()
                make_durable(data, state, str(scratch))
                times[name].append(time.perf_counter() - start)
    finally:
        stop.set()
        if args.busy:
            busy.join()
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"load average {os.getloadavg()[0]:.1f}; {args.uploads} uploads of {args.size_kib} KiB"
        + ("; another writer fsyncing meanwhile" if args.busy else "")
    )
    print("| data, state and directory fsynced | median | p90 |")
    print("|---|---|---|")
    for name, values in times.items():
        ordered = sorted(values)
        print(
            f"| {name} | {statistics.median(values) * 1000:.2f} ms "
            f"| {ordered[int(0.9 * len(ordered))] * 1000:.2f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
