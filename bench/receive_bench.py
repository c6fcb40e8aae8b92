"""The body-receiving path alone, in one process: CPU per GiB of a large upload
received through the socket body reader into a FileStore, with and without
the running SHA-256, beside hashlib's SHA-256 of the same bytes alone.

No HTTP and no framework: what separates the full app's receiving from the
tus layer's is the hash, and this shows what the hash costs beyond its own
cycles (hand-offs to the hashing thread, copies, buffers).  The sender is a
thread of the same process writing with ``sendfile`` over loopback TCP, so
its CPU is counted too (the same in every configuration).

    .venv/bin/python -m bench.receive_bench --size-mib 1024 --rounds 3

To compare with another version of the server, run it again with that
version's ``dqrxfer`` package first on ``PYTHONPATH`` (see
``tus_bench.baseline_tree``), alternating.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

from bench.tus_bench import MiB, make_payload
from dqrxfer.server.tus.body import body_reader
from dqrxfer.server.tus.store import FileStore, UploadInfo


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def receive(payload: Path, chunk: int, hashing: bool, scratch: Path) -> tuple[float, float]:
    """Upload ``payload`` in PATCH bodies of ``chunk`` bytes, each read from
    the socket as gunicorn hands it to the tus layer; (seconds, CPU seconds)
    until the finished upload is on disk and, ``hashing``, its digest known."""
    size = payload.stat().st_size
    directory = Path(tempfile.mkdtemp(prefix="receive-", dir=scratch))
    store = FileStore(directory, running_sha256=hashing)
    info = store.create(UploadInfo(id="", length=size))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    try:
        with open(payload, "rb") as source:
            start, cpu = time.perf_counter(), cpu_seconds()
            offset = 0
            while offset < size:
                count = min(chunk, size - offset)
                sender = threading.Thread(target=_send, args=(client, source, offset, count))
                sender.start()
                environ = {
                    "wsgi.input": Body(LengthReader(SocketUnreader(server), count)),
                    "gunicorn.socket": server,
                }
                with body_reader(environ, count, timeout=60) as read:
                    offset += store.write(info.id, offset, read, size - offset)
                sender.join()
            store.make_durable(info.id)
            if hashing:
                assert store.known_sha256(info.id) is not None
            return time.perf_counter() - start, cpu_seconds() - cpu
    finally:
        client.close()
        server.close()
        shutil.rmtree(directory)


def _send(sock: socket.socket, source: object, offset: int, count: int) -> None:
    fd = source.fileno()  # type: ignore[attr-defined]
    sent = 0
    while sent < count:
        sent += os.sendfile(sock.fileno(), fd, offset + sent, count - sent)


def hash_alone(payload: Path) -> float:
    """CPU seconds of hashlib's SHA-256 over the payload, from the page cache."""
    digest = hashlib.sha256()
    with open(payload, "rb", buffering=0) as handle:
        cpu = cpu_seconds()
        while block := handle.read(MiB):
            digest.update(block)
        return cpu_seconds() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunks-mib", type=int, nargs="+", default=[8, 64])
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-receive-", dir=os.environ.get("BENCH_TMP")))
    try:
        payload = scratch / "payload.bin"
        make_payload(payload, args.size_mib * MiB)
        gib = payload.stat().st_size / 2**30
        runs: dict[str, list[tuple[float, float, float]]] = {}
        for number in range(args.rounds):
            lineup = [(chunk, hashing) for chunk in args.chunks_mib for hashing in (False, True)]
            for chunk, hashing in lineup if number % 2 == 0 else lineup[::-1]:
                name = f"{chunk} MiB chunks, {'running SHA-256' if hashing else 'no hash'}"
                seconds, cpu = receive(payload, chunk * MiB, hashing, scratch)
                runs.setdefault(name, []).append((seconds, cpu, os.getloadavg()[0]))
            runs.setdefault("hashlib SHA-256 alone", []).append(
                (0.0, hash_alone(payload), os.getloadavg()[0])
            )
        print("| configuration | CPU s/GiB (runs) | MB/s | load |")
        print("|---|---|---|---|")
        for name, measured in runs.items():
            cpus = ", ".join(f"{cpu / gib:.2f}" for _, cpu, _ in measured)
            rates = [
                payload.stat().st_size / seconds / 1e6 for seconds, _, _ in measured if seconds
            ]
            rate = f"{statistics.median(rates):.0f}" if rates else ""
            loads = [load for _, _, load in measured]
            print(
                f"| {name} | {statistics.median(cpu / gib for _, cpu, _ in measured):.2f} "
                f"({cpus}) | {rate} | {min(loads):.1f}-{max(loads):.1f} |"
            )
    finally:
        shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
