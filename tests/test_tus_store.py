"""The file store and the file locker on their own: the fsync policies (which
files reach the disk when), completion marked by renaming the state file,
unreadable state after a power loss, and byte-range locks that exclude
threads and processes without a file per upload.

A power loss cannot be staged here, so the fsync tests watch the real
``os.fsync`` calls (each one still happens) and name the file each was for."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from dqrxfer.server import config as server_config
from dqrxfer.server.tus import errors
from dqrxfer.server.tus import store as store_module
from dqrxfer.server.tus.body import BodyGone
from dqrxfer.server.tus.datastore import HashingStore
from dqrxfer.server.tus.digest import RunningDigests
from dqrxfer.server.tus.locker import FileLocker
from dqrxfer.server.tus.store import FileStore, UploadInfo, fsync_policy

MiB = 1024 * 1024


def reader(data: bytes, block: int = 64 * 1024):  # type: ignore[no-untyped-def]
    view = memoryview(data)
    position = 0

    def read(size: int) -> bytes:
        nonlocal position
        piece = bytes(view[position : position + min(size, block)])
        position += len(piece)
        return piece

    return read


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of the files fsynced, in order (the real fsync still runs)."""
    names: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        names.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    monkeypatch.setattr(store_module.os, "fsync", recording_fsync)
    yield names


def finish(store: FileStore, info: UploadInfo) -> None:
    """What the protocol does with a finished upload: durable, then completed."""
    store.make_durable(info.id)
    store.mark_completed(info)


@pytest.mark.parametrize(
    ("given", "policy"),
    [
        ("complete", "complete"),
        ("always", "always"),
        ("never", "never"),
        (True, "always"),
        (False, "never"),
    ],
)
def test_fsync_policies_and_their_older_boolean_spelling(given: str | bool, policy: str) -> None:
    assert fsync_policy(given) == policy


def test_an_unknown_fsync_policy_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync must be one of always, complete, never"):
        FileStore(tmp_path, fsync="sometimes")
    for value in ('"sometimes"', "3"):
        config = tmp_path / "server.toml"
        config.write_text(f"data_dir = '{tmp_path}'\nfsync = {value}\n")
        with pytest.raises(server_config.ConfigError, match="fsync: must be one of"):
            server_config.load_settings(config)
    config.write_text(f"data_dir = '{tmp_path}'\n")
    assert server_config.load_settings(config).fsync == "complete"


def test_complete_policy_fsyncs_a_finished_upload_once_and_nothing_before(
    tmp_path: Path, synced: list[str]
) -> None:
    store = FileStore(tmp_path)
    info = store.create(UploadInfo(id="", length=3 * MiB))
    store.write(info.id, 0, reader(b"a" * MiB), MiB)
    store.write(info.id, MiB, reader(b"b" * 2 * MiB), 2 * MiB)
    assert synced == []  # creation and intermediate offsets: not one by one
    info = store.get(info.id)
    assert info.finished
    finish(store, info)
    # Issued together (see the next test), so in no particular order.
    assert sorted(synced) == sorted([info.id, f"{info.id}.info", tmp_path.name])


def test_a_finished_upload_s_data_state_and_directory_are_fsynced_at_the_same_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each fsync waits until all three have started: one after the other,
    the first would wait in vain and the barrier would break."""
    store = FileStore(tmp_path)
    info = store.create(UploadInfo(id="", length=1))
    store.write(info.id, 0, reader(b"x"), 1)
    all_started = threading.Barrier(3, timeout=30)
    real_fsync = os.fsync

    def fsync_when_all_started(fd: int) -> None:
        all_started.wait()
        real_fsync(fd)

    monkeypatch.setattr(store_module.os, "fsync", fsync_when_all_started)
    store.make_durable(info.id)
    assert not all_started.broken


def test_a_failed_fsync_is_raised_once_every_fsync_has_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path)
    info = store.create(UploadInfo(id="", length=1))
    store.write(info.id, 0, reader(b"x"), 1)
    ended: list[str] = []
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        try:
            if name.endswith(".info"):
                raise OSError(errno.EIO, "Input/output error")
            real_fsync(fd)
        finally:
            ended.append(name)

    monkeypatch.setattr(store_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        store.make_durable(info.id)
    assert sorted(ended) == sorted([info.id, f"{info.id}.info", tmp_path.name])


def test_an_application_that_publishes_finished_uploads_needs_only_their_data_synced(
    tmp_path: Path, synced: list[str]
) -> None:
    store = FileStore(tmp_path)
    info = store.create(UploadInfo(id="", length=1))
    store.write(info.id, 0, reader(b"x"), 1)
    store.make_durable(info.id, with_state=False)
    assert synced == [info.id]


def test_always_policy_fsyncs_every_write_and_state_change(
    tmp_path: Path, synced: list[str]
) -> None:
    store = FileStore(tmp_path, fsync="always")
    info = store.create(UploadInfo(id="", length=2))
    assert synced == [info.id, f"{info.id}.info", tmp_path.name]
    synced.clear()
    store.write(info.id, 0, reader(b"a"), 2)
    store.write(info.id, 1, reader(b"b"), 1)
    assert synced == [info.id, info.id]
    synced.clear()
    finish(store, store.get(info.id))
    assert synced == [tmp_path.name]  # the rename to <id>.done; the data was synced already


def test_never_policy_fsyncs_nothing(tmp_path: Path, synced: list[str]) -> None:
    store = FileStore(tmp_path, fsync="never")
    info = store.create(UploadInfo(id="", length=4))
    store.write(info.id, 0, reader(b"data"), 4)
    finish(store, store.get(info.id))
    assert synced == []


def test_large_writes_go_through_early_writeback_unchanged(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    payload = os.urandom(3 * store_module.WRITEBACK_SIZE + 12345)
    info = store.create(UploadInfo(id="", length=len(payload)))
    assert store.write(info.id, 0, reader(payload, MiB), len(payload)) == len(payload)
    assert store.data_path(info.id).read_bytes() == payload
    if sys.platform == "linux":
        assert store_module._start_writeback is not None


def test_completion_renames_the_state_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    info = store.create(UploadInfo(id="", length=0, metadata={"name": "x"}))
    assert not store.get(info.id).completed
    finish(store, store.get(info.id))
    assert not (tmp_path / f"{info.id}.info").exists()
    state = json.loads((tmp_path / f"{info.id}.done").read_text())
    assert state["metadata"] == {"name": "x"} and "completed" not in state
    again = store.get(info.id)
    assert again.completed and again.metadata == {"name": "x"}
    assert list(store.upload_ids()) == [info.id]
    store.mark_completed(again)  # twice is harmless
    store.terminate(info.id)
    assert [path for path in tmp_path.rglob("*") if not path.is_dir()] == []
    with pytest.raises(errors.TusError) as gone:
        store.get(info.id)
    assert gone.value.status == 404


def test_a_known_length_s_owner_hint_is_a_second_name_of_its_state_file(tmp_path: Path) -> None:
    """No file is created for the hint of an upload of known length (on ext4
    a new file cost 25 to 75 times what a link costs): its name is all the
    cap's count reads.  A deferred length's hint is a file of its own, since
    it holds the length a PATCH in flight reserved."""
    store = FileStore(tmp_path)
    known = store.create(UploadInfo(id="", length=10, metadata={}, owner="alice"))
    deferred = store.create(UploadInfo(id="", length=None, metadata={}, owner="alice"))
    assert sorted(store.unfinished_upload_ids("alice")) == sorted([known.id, deferred.id])
    hints = Path(store._owner_dir("alice"))
    state = os.stat(tmp_path / f"{known.id}.info")
    assert os.stat(hints / known.id).st_ino == state.st_ino and state.st_nlink == 2
    assert os.stat(hints / deferred.id).st_ino != os.stat(tmp_path / f"{deferred.id}.info").st_ino
    store.reserve(deferred, 7)
    assert store.unfinished_upload("alice", deferred.id).reserved == 7  # type: ignore[union-attr]
    assert store.unfinished_upload("alice", known.id).reserved == 0  # type: ignore[union-attr]
    # Completion takes the hint away first: the state file has one name again.
    finish(store, store.get(known.id))
    assert store.unfinished_upload_ids("alice") == [deferred.id]
    assert os.stat(tmp_path / f"{known.id}.done").st_nlink == 1
    store.terminate(deferred.id)
    store.terminate(known.id)
    assert [path for path in tmp_path.rglob("*") if not path.is_dir()] == []


def test_where_no_hard_link_can_be_made_the_hint_is_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: str, target: str) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(store_module.os, "link", no_links)
    store = FileStore(tmp_path)
    info = store.create(UploadInfo(id="", length=10, metadata={}, owner="bob"))
    assert store.unfinished_upload_ids("bob") == [info.id]
    hint = Path(store._owner_dir("bob")) / info.id
    assert hint.stat().st_nlink == 1 and hint.read_bytes() == b""


def test_a_state_file_of_an_earlier_version_is_read(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    upload_id = "ab" * 16
    (tmp_path / upload_id).write_bytes(b"xyz")
    state = {"id": upload_id, "length": 3, "metadata": {}, "created": 1.0, "completed": True}
    (tmp_path / f"{upload_id}.info").write_text(json.dumps(state))
    info = store.get(upload_id)
    assert info.completed and info.offset == 3 and info.finished


def test_an_unreadable_state_file_makes_the_upload_unknown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FileStore(tmp_path)
    info = store.create(UploadInfo(id="", length=10))
    (tmp_path / f"{info.id}.info").write_bytes(b"")  # as a power loss may leave it
    with pytest.raises(errors.TusError) as unknown:
        store.get(info.id)
    assert unknown.value.status == 404
    assert f"upload {info.id}: unreadable state file" in caplog.text


def test_file_locks_exclude_threads_and_leave_no_file_per_upload(tmp_path: Path) -> None:
    locker = FileLocker(tmp_path, timeout=5)
    inside: list[str] = []
    overlaps: list[str] = []

    def writer(upload_id: str) -> None:
        for _ in range(20):
            with locker.lock(upload_id):
                if upload_id in inside:
                    overlaps.append(upload_id)
                inside.append(upload_id)
                time.sleep(0.001)
                inside.remove(upload_id)

    threads = [threading.Thread(target=writer, args=(f"{n % 3:032x}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["uploads.lock", "uploads.release"]


def test_a_busy_lock_times_out_with_423_and_other_uploads_go_on(tmp_path: Path) -> None:
    locker = FileLocker(tmp_path, timeout=0.2)
    with locker.lock("a" * 32):
        with pytest.raises(errors.TusError) as busy, locker.lock("a" * 32):
            pass
        assert busy.value.status == 423
        with locker.lock("b" * 32, timeout=0):
            pass


def test_a_lock_held_by_a_killed_process_is_released(tmp_path: Path) -> None:
    upload_id = "c" * 32
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from dqrxfer.server.tus.locker import FileLocker\n"
            "with FileLocker(sys.argv[1]).lock(sys.argv[2]):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(600)\n",
            str(tmp_path),
            upload_id,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        locker = FileLocker(tmp_path, timeout=0)
        with pytest.raises(errors.TusError), locker.lock(upload_id):
            pass
        holder.kill()
        holder.wait()
        with FileLocker(tmp_path, timeout=5).lock(upload_id):
            pass
    finally:
        holder.kill()
        holder.wait()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def failing_reader(data: bytes, block: int = 64 * 1024):  # type: ignore[no-untyped-def]
    """Gives ``data`` in blocks, then fails as a vanished client does."""
    read = reader(data, block)

    def read_then_fail(size: int) -> bytes:
        piece = read(size)
        if not piece:
            raise BodyGone("the client went away")
        return piece

    return read_then_fail


def test_the_running_sha256_follows_every_kind_of_write(tmp_path: Path) -> None:
    store = FileStore(tmp_path, running_sha256=True)
    payload = os.urandom(3 * MiB + 17)
    info = store.create(UploadInfo(id="", length=len(payload)))
    assert store.known_sha256(info.id) is None  # nothing written through it yet
    store.write(info.id, 0, reader(payload[:MiB], 100_000), len(payload))
    assert store.known_sha256(info.id) == sha256_hex(payload[:MiB])
    # A checksummed chunk that fails verification is cut away, and so is its hash.
    chunk = payload[MiB : 2 * MiB]

    def refuse() -> None:
        raise errors.TusError(460, "checksum mismatch")

    with pytest.raises(errors.TusError):
        store.write(info.id, MiB, reader(chunk), len(payload), verify=refuse)
    assert store.get(info.id).offset == MiB
    assert store.known_sha256(info.id) == sha256_hex(payload[:MiB])
    # A client that goes away keeps what arrived, in the file and in the hash.
    with pytest.raises(BodyGone):
        store.write(info.id, MiB, failing_reader(chunk), len(payload))
    assert store.known_sha256(info.id) == sha256_hex(payload[: 2 * MiB])
    store.write(info.id, 2 * MiB, reader(payload[2 * MiB :]), len(payload))
    assert store.known_sha256(info.id) == sha256_hex(payload)


def test_the_running_sha256_is_a_capability_the_store_declares(tmp_path: Path) -> None:
    """Applications reach the running SHA-256 through the HashingStore
    capability of the Store contract, never through FileStore itself."""
    store = FileStore(tmp_path, running_sha256=True)
    assert isinstance(store, HashingStore)
    assert not isinstance(object(), HashingStore)
    info = store.create(UploadInfo(id="", length=4))
    store.write(info.id, 0, reader(b"abcd"), 4)
    assert store.known_sha256(info.id) == sha256_hex(b"abcd")
    store.forget_sha256(info.id)
    assert store.known_sha256(info.id) is None  # forgotten: the data must be read again
    store.forget_sha256(info.id)  # twice is harmless
    plain = FileStore(tmp_path / "plain")
    info = plain.create(UploadInfo(id="", length=4))
    plain.write(info.id, 0, reader(b"abcd"), 4)
    assert plain.known_sha256(info.id) is None  # a store that does not hash knows nothing
    plain.forget_sha256(info.id)


def test_the_running_sha256_is_right_when_the_reader_reuses_its_buffer(tmp_path: Path) -> None:
    """As gunicorn's socket reader does: every block lands in the same buffer,
    overwritten by the next read while the hashing thread may still be at
    work (blocks of changing sizes, growing past the first)."""
    store = FileStore(tmp_path, running_sha256=True)
    payload = os.urandom(6 * MiB + 5)
    sizes = iter([100_000, MiB, 7, 3 * MiB // 2, 65_536] * 20)
    shared = bytearray(2 * MiB)
    position = 0

    def reusing_reader(size: int) -> memoryview:
        nonlocal position
        count = min(size, next(sizes), len(payload) - position)
        shared[:count] = payload[position : position + count]
        position += count
        return memoryview(shared)[:count]

    info = store.create(UploadInfo(id="", length=len(payload)))
    store.write(info.id, 0, reusing_reader, len(payload))
    assert store.known_sha256(info.id) == sha256_hex(payload)


class AskedFuture(Future[None]):
    """A future that knows when someone waits for it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = threading.Event()

    def result(self, timeout: float | None = None) -> None:
        self.asked.set()
        return super().result(timeout)


class LastUpdate:
    """The last update of a running hash, still to come when it is kept;
    its ``hexdigest`` fails if taken before that update."""

    def __init__(self, first: bytes, last: bytes) -> None:
        self.hash = hashlib.sha256(first)
        self.last = last
        self.pending = AskedFuture()
        threading.Thread(target=self._update_when_asked, daemon=True).start()

    def _update_when_asked(self) -> None:
        if self.pending.asked.wait(timeout=60):
            self.hash.update(self.last)
            self.pending.set_result(None)

    def hexdigest(self) -> str:
        assert self.pending.done(), "digest taken before the last update ended"
        return self.hash.hexdigest()


def test_a_running_sha256_still_hashing_its_last_block_is_waited_for() -> None:
    """A PATCH is answered while its last block may still be hashing: the
    digest (or the hash the next PATCH goes on with) is only ever taken
    after that block is in it."""
    digests = RunningDigests()
    first, last = os.urandom(1000), os.urandom(1000)
    running = LastUpdate(first, last)
    digests.keep("a", 2000, running, running.pending)
    assert digests.hexdigest("a", 2000) == sha256_hex(first + last)
    running = LastUpdate(first, last)
    digests.keep("b", 2000, running, running.pending)
    assert digests.start("b", 2000) is running and running.pending.done()
    # A hash whose last update failed is not known at all.
    failed: Future[None] = Future()
    failed.set_exception(OSError("the data file ended early"))
    digests.keep("c", 2000, hashlib.sha256(), failed)
    assert digests.hexdigest("c", 2000) is None
    assert digests.start("c", 2000) is None


def test_the_running_sha256_is_never_guessed(tmp_path: Path) -> None:
    store = FileStore(tmp_path, running_sha256=True)
    info = store.create(UploadInfo(id="", length=8))
    store.write(info.id, 0, reader(b"abcd"), 8)
    # Another process (a second worker) goes on from offset 4: it knows
    # nothing of the first 4 bytes but what it reads from the file.
    other = FileStore(tmp_path, running_sha256=True)
    other.write(info.id, 4, reader(b"efgh"), 4)
    assert other.known_sha256(info.id) == sha256_hex(b"abcdefgh")
    # And this one's hash stops at 4 bytes while the file has 8.
    assert store.known_sha256(info.id) is None
    assert FileStore(tmp_path).known_sha256(info.id) is None  # without running hashes


def test_a_final_upload_of_one_partial_inherits_its_running_sha256(tmp_path: Path) -> None:
    store = FileStore(tmp_path, running_sha256=True)
    payload = os.urandom(MiB)
    partial = store.create(UploadInfo(id="", length=len(payload), concat="partial"))
    store.write(partial.id, 0, reader(payload), len(payload))
    final = store.create(UploadInfo(id="", length=None, concat="final", partials=[partial.id]))
    store.declare_length(final, len(payload))
    store.concatenate(final, [store.get(partial.id)])
    assert store.known_sha256(final.id) == sha256_hex(payload)
    assert store.data_path(final.id).read_bytes() == payload


def test_a_write_that_finds_no_running_sha256_catches_up_from_the_file(tmp_path: Path) -> None:
    """A PATCH that comes to another process (a new connection after a reset,
    another worker) finds no hash at its offset: it hashes the bytes below it
    from the data file while its own arrive, and the digest is complete at
    the end (nothing is read again after the last byte)."""
    payload = os.urandom(3 * MiB + 5)
    first = FileStore(tmp_path, running_sha256=True)
    info = first.create(UploadInfo(id="", length=len(payload)))
    with pytest.raises(BodyGone):
        first.write(info.id, 0, failing_reader(payload[:MiB]), len(payload))
    other = FileStore(tmp_path, running_sha256=True)  # as another worker sees the directory
    assert other.known_sha256(info.id) is None

    # A checksummed chunk refused there: the hash it caught up with stays, at the offset.
    def refuse() -> None:
        raise errors.TusError(460, "checksum mismatch")

    with pytest.raises(errors.TusError):
        other.write(info.id, MiB, reader(payload[MiB : 2 * MiB]), len(payload), verify=refuse)
    assert other.known_sha256(info.id) == sha256_hex(payload[:MiB])

    third = FileStore(tmp_path, running_sha256=True)
    third.write(info.id, MiB, reader(payload[MiB:], 100_000), len(payload))
    assert third.known_sha256(info.id) == sha256_hex(payload)
