"""The client's parts on their own: payloads, packing, checksums, the resume
store, the retry policy, exit codes.  (Transfers against a live server are in
test_client_transfers.py.)"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import os
import random
import subprocess
import tarfile
import threading
import zlib
from pathlib import Path

import pytest

from dqrxfer.errors import BusyError, GaveUpError, PayloadChangedError, UsageError, worst_exit_code
from dqrxfer.packing import DirectoryPayload
from dqrxfer.payload import (
    BackgroundScan,
    FilePayload,
    ScanStopped,
    choose_checksum,
    is_tarball,
    payload_for,
    scan,
)
from dqrxfer.resume import ResumeEntry, ResumeStore, resume_key
from dqrxfer.retry import Retrier, RetryPolicy
from dqrxfer.upload import split_ranges

MiB = 1024 * 1024


def make_tree(root: Path) -> Path:
    (root / "tier1" / "plots").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "index.html").write_text("<html>report</html>")
    (root / "data.json").write_text('{"ok": true}')
    (root / "tier1" / "plots" / "a.png").write_bytes(os.urandom(70_000))
    (root / "tier1" / "run.sh").write_text("#!/bin/sh\n")
    (root / "tier1" / "run.sh").chmod(0o700)
    (root / "tier1" / ("long-" + "x" * 150 + ".txt")).write_text("long name")
    (root / "tier1" / "été.txt").write_text("non-ASCII name")
    return root


def archive(payload: DirectoryPayload) -> bytes:
    return b"".join(payload.blocks(0, payload.size))


def test_directory_packs_to_a_sorted_normalised_tar_that_tar_reads(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "S230518h_llo_1")
    payload = DirectoryPayload.pack(root)
    data = archive(payload)
    assert len(data) == payload.size and payload.size % tarfile.RECORDSIZE == 0
    assert payload.filename == "S230518h_llo_1.tar" and payload.kind == "tar"

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names, key=lambda n: n.encode())
        assert "tier1/plots/a.png" in names and "tier1/été.txt" in names
        for member in members:
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
            assert member.mtime == members[0].mtime
            if member.isfile():
                content = tar.extractfile(member).read()  # type: ignore[union-attr]
                assert content == (root / member.name).read_bytes()
        modes = {m.name: m.mode for m in members}
        assert modes["tier1/run.sh"] == 0o755 and modes["index.html"] == 0o644
        assert modes["empty"] == 0o755
    # GNU tar agrees (an independent reader).
    listing = subprocess.run(
        ["tar", "-tf", "-"], input=data, capture_output=True, check=True
    ).stdout.decode()
    assert "tier1/plots/a.png" in listing.splitlines()


def test_packing_depends_on_content_not_on_owners_or_file_times(tmp_path: Path) -> None:
    first = make_tree(tmp_path / "one")
    second = make_tree(tmp_path / "two")
    for path in (second / "tier1" / "plots" / "a.png", first / "tier1" / "plots" / "a.png"):
        path.write_bytes(b"same bytes" * 1000)
    os.environ["SOURCE_DATE_EPOCH"] = "1684400000"
    try:
        os.utime(second / "index.html", (1_000_000_000, 1_000_000_000))
        one, two = DirectoryPayload.pack(first), DirectoryPayload.pack(second)
        assert archive(one) == archive(two)
        assert archive(one) == archive(DirectoryPayload.pack(first))
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]


def test_any_byte_range_of_the_packed_tar_reads_back_identically(tmp_path: Path) -> None:
    payload = DirectoryPayload.pack(make_tree(tmp_path / "r"))
    whole = archive(payload)
    rng = random.Random(4)
    for _ in range(300):
        start = rng.randrange(payload.size)
        end = rng.randrange(start, payload.size + 1)
        assert b"".join(payload.blocks(start, end)) == whole[start:end]


def test_packing_skips_what_the_server_would_refuse_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_tree(tmp_path / "r")
    (root / ".htaccess").write_text("deny")
    (root / "link-to-dir").symlink_to(root / "tier1")
    (root / "link-to-file").symlink_to(root / "index.html")
    (root / "dangling").symlink_to(root / "nowhere")
    os.mkfifo(root / "fifo")
    payload = DirectoryPayload.pack(root)
    with tarfile.open(fileobj=io.BytesIO(archive(payload))) as tar:
        names = tar.getnames()
        linked = tar.extractfile("link-to-file").read()  # type: ignore[union-attr]
    assert linked == b"<html>report</html>"
    for skipped in (".htaccess", "link-to-dir", "dangling", "fifo"):
        assert skipped not in names
        assert f"skipping {skipped}:" in caplog.text


def test_a_file_changed_after_packing_is_noticed(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "r")
    payload = DirectoryPayload.pack(root)
    (root / "index.html").write_text("<html>changed, and longer</html>")
    with pytest.raises(PayloadChangedError, match="index.html"):
        archive(payload)
    with pytest.raises(PayloadChangedError):
        payload.check_unchanged()


def test_empty_directory_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "e" / "sub").mkdir(parents=True)
    with pytest.raises(UsageError, match="no files"):
        DirectoryPayload.pack(tmp_path / "e")


def test_tarballs_are_recognised_by_content_not_name(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    for mode, name in (("w", "plain.tar"), ("w:gz", "r.tgz"), ("w:bz2", "b"), ("w:xz", "x.bin")):
        with tarfile.open(tmp_path / name, mode) as tar:
            tar.add(tree / "index.html", "index.html")
        assert is_tarball(tmp_path / name), name
        assert payload_for(tmp_path / name).kind == "tar"
        assert payload_for(tmp_path / name, as_file=True).kind == "file"
    (tmp_path / "data.json.gz").write_bytes(gzip.compress(b'{"not": "a tar"}'))
    (tmp_path / "fake.tar").write_text("just text")
    for name in ("data.json.gz", "fake.tar"):
        assert not is_tarball(tmp_path / name)
        assert payload_for(tmp_path / name).kind == "file"
    assert payload_for(tree).kind == "tar"
    with pytest.raises(UsageError, match="no such file"):
        payload_for(tmp_path / "missing")


def test_scan_gives_the_sha256_and_one_digest_per_chunk(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(5 * 1024 * 1024 + 123)
    path.write_bytes(data)
    payload = FilePayload.open(path, "file")
    chunk = 2 * 1024 * 1024 + 7  # not a multiple of the read block
    crc = scan(payload, chunk, "crc32")
    assert crc.chunk_digests[0] == zlib.crc32(data[:chunk]).to_bytes(4, "big")
    result = scan(payload, chunk, "sha1")
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    expected = [hashlib.sha1(data[i : i + chunk]).digest() for i in range(0, len(data), chunk)]
    assert result.chunk_digests == expected
    assert result.grid_digest(chunk, 2 * chunk) == expected[1]
    assert result.grid_digest(2 * chunk, len(data)) == expected[2]
    assert result.grid_digest(chunk + 1, 2 * chunk) is None  # off the grid: computed apart
    assert result.grid_digest(chunk, chunk + 5) is None
    assert result.grid_digest(2 * chunk, len(data) - 1) is None  # part of the last chunk
    assert scan(payload, chunk).chunk_digests == []


def test_a_background_scan_gives_what_scan_gives_and_its_digests_as_they_come(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    data = os.urandom(9 * 1024 * 1024 + 5)
    path.write_bytes(data)
    payload = FilePayload.open(path, "file")
    chunk = 1024 * 1024
    background = BackgroundScan(payload, chunk, "crc32")
    assert background.scan.filling is not None
    background.start()
    # Asked for before the pass gets there: waited for, never computed twice.
    assert background.scan.grid_digest(3 * chunk, 4 * chunk) == zlib.crc32(
        data[3 * chunk : 4 * chunk]
    ).to_bytes(4, "big")
    result = background.result()
    assert result.filling is None
    expected = scan(payload, chunk, "crc32")
    assert result.sha256 == expected.sha256 == hashlib.sha256(data).hexdigest()
    assert result.chunk_digests == expected.chunk_digests

    # A file that changes under the pass: result() raises what the pass met.
    path.write_bytes(os.urandom(len(data) + 1))
    changed = BackgroundScan(payload, chunk, None).start()
    with pytest.raises(PayloadChangedError):
        changed.result()

    # Stopped: the thread ends and a waiting sender is let go.
    big = tmp_path / "big"
    big.write_bytes(os.urandom(64 * 1024 * 1024))
    stopped = BackgroundScan(FilePayload.open(big, "file"), chunk, "crc32")
    stopped._stop.set()  # before it starts: it stops at its first block
    stopped.start()
    assert stopped.scan.grid_digest(0, chunk) is None
    with pytest.raises(ScanStopped):
        stopped.result()


def test_checksum_algorithm_choice() -> None:
    assert choose_checksum(("md5", "SHA1", "crc32")) == "crc32"
    assert choose_checksum(("md5", "sha1")) == "sha1"
    assert choose_checksum(("md5",)) == "md5"
    assert choose_checksum(("blake3",)) is None
    assert choose_checksum(()) is None


def test_parallel_ranges_cover_the_payload_in_equal_aligned_parts() -> None:
    cases = ((100, 4, 10), (95, 4, 10), (10, 4, 10), (1, 3, 8), (64, 3, 8), (91, 10, 10))
    for size, parts, align in cases:
        ranges = split_ranges(size, parts, align)
        assert ranges[0][0] == 0 and ranges[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert all(start % align == 0 and end > start for start, end in ranges)
        assert len(ranges) == min(parts, -(-size // align))
        lengths = [end - start for start, end in ranges]
        assert max(lengths) - min(lengths) <= align, (size, parts, ranges)
    # 100 MiB in four: 25 MiB each (on 8 MiB chunks it was 24, 24, 24, 28).
    assert {end - start for start, end in split_ranges(100 * MiB, 4)} == {25 * MiB}


def test_resume_store_round_trip_drop_and_keys(tmp_path: Path) -> None:
    store = ResumeStore(tmp_path / "cache")
    metadata = {"graceid": "S230518h", "filename": "a", "sha256": "0" * 64}
    key = resume_key("https://x", metadata, 10)
    assert key != resume_key("https://y", metadata, 10)
    assert key != resume_key("https://x", {**metadata, "filename": "b"}, 10)
    assert key != resume_key("https://x", metadata, 10, "parallel:4:8")
    assert store.get(key) is None
    store.put(key, ResumeEntry("https://x", 10, "0" * 64, url="https://x/files/abc"))
    assert store.get(key).url == "https://x/files/abc"  # type: ignore[union-attr]
    assert oct((tmp_path / "cache").stat().st_mode & 0o777) == "0o700"
    store.drop(key)
    assert store.get(key) is None
    (tmp_path / "cache" / f"{key}.json").write_text("{not json")
    assert store.get(key) is None  # unreadable entries are dropped, not fatal


def test_resume_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from dqrxfer.resume import ResumeStore\n"
        "with ResumeStore(sys.argv[1]).lock('k', 'x'):\n"
        "    print('locked', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with (
            pytest.raises(BusyError, match="another dqr-upload"),
            ResumeStore(tmp_path).lock("k", "x"),
        ):
            pass
    finally:
        holder.communicate("", timeout=30)
    with ResumeStore(tmp_path).lock("k", "x"):  # released when the holder ended
        pass


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(retries=10, wait=1.0, max_wait=30.0)
    rng = random.Random(1)
    for failure, base in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (9, 30.0)):
        delays = [policy.delay(failure, rng) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in delays)
        assert max(delays) - min(delays) > base / 4  # really jittered


def test_retrier_gives_up_after_the_budget_and_progress_resets_it() -> None:
    retrier = Retrier(RetryPolicy(retries=2, wait=0.0), "thing")
    retrier.failed(OSError("a"))
    retrier.progress()
    retrier.failed(OSError("b"))
    retrier.failed(OSError("c"))
    with pytest.raises(GaveUpError, match="thing: gave up after 2 retries: d"):
        retrier.failed(OSError("d"))


def test_retrier_respects_the_deadline_and_cancellation() -> None:
    now = [0.0]
    retrier = Retrier(RetryPolicy(retries=5, wait=10.0, deadline=12.0), "x", clock=lambda: now[0])
    now[0] = 8.0  # 4 s left
    retrier.failed(OSError("slow"))  # the first lost connection of a row: at once
    with pytest.raises(GaveUpError, match="deadline of 12s"):
        retrier.failed(OSError("slow"))  # the second waits 10 to 20 s
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GaveUpError, match="stopped"):
        Retrier(RetryPolicy(wait=100.0), "y", cancel).failed(OSError("e"))


def test_a_session_reads_the_proxy_environment_once_per_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dqrxfer.session import make_session

    for name in ("HTTP_PROXY", "NO_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.setenv("no_proxy", "exempt.example")
    session = make_session()

    def merged(url: str, proxies: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
        return session.merge_environment_settings(url, proxies or {}, None, None, None)

    first = merged("http://a.example/files/1")
    assert first["proxies"]["http"] == "http://proxy.invalid:3128"
    assert "http" not in merged("http://exempt.example/files/1")["proxies"]
    assert merged("http://a.example/files/1", {"http": "http://mine:1"})["proxies"]["http"] == (
        "http://mine:1"
    )
    monkeypatch.setenv("http_proxy", "http://other.invalid:3128")
    again = merged("http://a.example/files/2")
    assert again == first and again["proxies"] is not first["proxies"]  # remembered, a copy
    fresh = make_session().merge_environment_settings("http://a.example/", {}, None, None, None)
    assert fresh["proxies"]["http"] == "http://other.invalid:3128"  # a new session reads afresh


def test_worst_exit_code_prefers_what_needs_a_person() -> None:
    assert worst_exit_code([0, 0]) == 0
    assert worst_exit_code([0, 5, 4]) == 4
    assert worst_exit_code([5, 3, 4]) == 3
    assert worst_exit_code([2, 5]) == 5
    assert worst_exit_code([2, 0]) == 2
