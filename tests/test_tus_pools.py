"""The per-process thread pools of the tus layer (fsync threads, hashing
threads): one pool per process, and a working one of its own in a child
forked after the parent made its pool, as a gunicorn worker is."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from dqrxfer.server.tus import digest, syncing
from dqrxfer.server.tus.pools import ProcessLocalPool

#: How long a child may take before it counts as hung (SIGALRM ends it).
CHILD_SECONDS = 30


def exit_code_of_forked(work: Callable[[], None]) -> int:
    """Run ``work`` in a forked child: 0 if it returned, 1 if it raised (the
    traceback on stderr), ``-SIGALRM`` if it hung."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(CHILD_SECONDS)
            work()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def fsync_files(directory: Path) -> None:
    files = [directory / "a", directory / "b", directory / "c"]
    for path in files:
        path.write_bytes(b"x")
    syncing.fsync_together(files, [directory])  # all but the first on the pool


def hash_in_blocks(directory: Path) -> None:
    blocks = [os.urandom(64 * 1024) for _ in range(3)]
    feeder = digest.Feeder(hashlib.sha256())
    for block in blocks:
        feeder.feed(block)
    feeder.wait()
    assert feeder.digest.hexdigest() == hashlib.sha256(b"".join(blocks)).hexdigest()


USERS = {
    "fsync": (syncing._pool, fsync_files),
    "sha256": (digest._pool, hash_in_blocks),
}


def test_one_process_gets_the_same_pool_from_every_thread() -> None:
    pool = ProcessLocalPool(2, thread_name_prefix="test-pool")
    threads = 8
    barrier = threading.Barrier(threads)
    got: list[object] = []

    def get() -> None:
        barrier.wait()  # all ask at once, before any pool exists
        got.append(pool.get())

    runners = [threading.Thread(target=get) for _ in range(threads)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()
    assert len(got) == threads and all(executor is got[0] for executor in got)
    assert pool.get() is got[0]
    assert pool.get().submit(threading.current_thread).result().name.startswith("test-pool")


@pytest.mark.parametrize("user", USERS)
def test_a_forked_child_gets_a_working_pool_of_its_own(user: str, tmp_path: Path) -> None:
    pool, use = USERS[user]
    use(tmp_path)  # the parent's pool made, its threads idle
    parent_pool = pool.get()

    def in_child() -> None:
        child_pool = pool.get()
        assert child_pool is not parent_pool
        assert child_pool is pool.get()
        assert child_pool.submit(os.getpid).result(CHILD_SECONDS) == os.getpid()
        use(tmp_path)

    assert exit_code_of_forked(in_child) == 0
    assert pool.get() is parent_pool  # the parent's own is left as it was
