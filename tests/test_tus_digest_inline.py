"""A write's first bytes (digest.INLINE_BYTES) are hashed on the request's
thread, the rest on the hashing threads: the same digests either way."""

from __future__ import annotations

import hashlib
import itertools
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dqrxfer.server.tus import digest as digest_module
from dqrxfer.server.tus.body import StableBuffer
from dqrxfer.server.tus.digest import INLINE_BYTES, Feeder
from dqrxfer.server.tus.store import FileStore, UploadInfo

KiB = 1024


def test_a_small_body_is_hashed_at_once_on_the_callers_thread() -> None:
    body = os.urandom(64 * KiB)
    buffer = StableBuffer(body)
    feeder = Feeder(hashlib.sha256())
    feeder.feed(memoryview(buffer)[: 32 * KiB])
    feeder.feed(body[32 * KiB :])
    # Nothing was handed to a hashing thread: nothing to wait for, and the
    # receive buffer is not held for one.
    assert feeder.unsettled() is None
    assert buffer.hashing is None
    assert feeder.digest.hexdigest() == hashlib.sha256(body).hexdigest()


def test_past_the_allowance_blocks_go_to_the_hashing_threads() -> None:
    body = os.urandom(INLINE_BYTES + 64 * KiB)
    feeder = Feeder(hashlib.sha256())
    feeder.feed(body[: 64 * KiB])
    feeder.feed(body[64 * KiB :])  # beyond the allowance: threaded
    pending = feeder.unsettled()
    assert isinstance(pending, Future)
    pending.result()
    assert feeder.digest.hexdigest() == hashlib.sha256(body).hexdigest()


def test_a_write_that_catches_up_hashes_nothing_inline(tmp_path: Path) -> None:
    """Its blocks wait behind the hash of the file's first bytes: hashing one
    at once would put it before them."""
    data = tmp_path / "data"
    head, body = os.urandom(300 * KiB), os.urandom(16 * KiB)
    data.write_bytes(head)
    feeder = Feeder(hashlib.sha256(), catch_up=(str(data), len(head)))
    feeder.feed(body)
    feeder.wait()
    assert feeder.digest.hexdigest() == hashlib.sha256(head + body).hexdigest()


def reusing_reader(payload: bytes, sizes: list[int]) -> Callable[[int], memoryview]:
    """Blocks of ``sizes`` (cycled), each in the same buffer, overwritten by
    the next read (as a reader that is no StableBuffer does)."""
    shared = bytearray(max(sizes))
    position, turn = 0, 0

    def read(size: int) -> memoryview:
        nonlocal position, turn
        count = min(size, sizes[turn % len(sizes)], len(payload) - position)
        turn += 1
        shared[:count] = payload[position : position + count]
        position += count
        return memoryview(shared)[:count]

    return read


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    length=st.integers(1, 400 * KiB),
    cuts=st.lists(st.floats(0, 1), max_size=3),
    sizes=st.lists(st.integers(1, 200 * KiB), min_size=1, max_size=4),
    inline=st.sampled_from([0, 7, INLINE_BYTES]),
)
def test_the_running_sha256_is_the_same_inline_or_threaded(
    length: int, cuts: list[float], sizes: list[int], inline: int
) -> None:
    """Writes of any sizes, in blocks of any sizes, with any allowance
    (none: every block threaded, as before): the digest is the data's."""
    payload = os.urandom(length)
    offsets = sorted({0, length, *(int(length * cut) for cut in cuts)})
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as tmp:
        patch.setattr(digest_module, "INLINE_BYTES", inline)
        store = FileStore(Path(tmp), fsync="never", running_sha256=True)
        info = store.create(UploadInfo(id="", length=length))
        for start, end in itertools.pairwise(offsets):
            read = reusing_reader(payload[start:end], sizes)
            assert store.write(info.id, start, read, length) == end - start
            assert store.known_sha256(info.id) == hashlib.sha256(payload[:end]).hexdigest()
