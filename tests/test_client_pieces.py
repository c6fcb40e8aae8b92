"""PATCH requests grow past the chunk size while the link holds (when the chunk
size is not pinned), in whole chunks whose CRC-32 checksums are combined.

The CRC-32 combination against zlib; the sizes and checksums of the requests
of real uploads to a real server (growing with CRC-32 and without checksums,
not growing when pinned); and dqr-upload's default against its pinned
--chunk-size."""

from __future__ import annotations

import base64
import hashlib
import math
import os
import random
import zlib
from pathlib import Path

import pytest

from dqrxfer import pieces, sender
from dqrxfer.payload import FilePayload, crc32_combine, scan
from dqrxfer.resume import ResumeStore
from dqrxfer.session import make_session
from dqrxfer.upload import ReportTarget, ReportUploader, UploadOptions
from support.cli import run_cli
from support.isal import require_isal
from support.live import LiveServer

MiB = 1024 * 1024
CHUNK = 256 * 1024


def test_crc32_combine_gives_zlibs_crc32_of_the_concatenation() -> None:
    rng = random.Random(3)
    for first_size, second_size in [(0, 0), (1, 0), (0, 1), (5, 3), (1000, CHUNK), (CHUNK, 77)]:
        first, second = rng.randbytes(first_size), rng.randbytes(second_size)
        combined = crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second))
        assert combined == zlib.crc32(first + second), (first_size, second_size)


def test_span_digest_combines_the_known_chunks_up_to_the_end_asked_for(tmp_path: Path) -> None:
    data = os.urandom(5 * CHUNK + 99)
    (tmp_path / "f").write_bytes(data)
    payload = FilePayload.open(tmp_path / "f", "file")
    crc = scan(payload, CHUNK, "crc32")

    def crc_of(start: int, end: int) -> bytes:
        return zlib.crc32(data[start:end]).to_bytes(4, "big")

    assert crc.span_digest(CHUNK, 4 * CHUNK) == (4 * CHUNK, crc_of(CHUNK, 4 * CHUNK))
    assert crc.span_digest(0, len(data)) == (len(data), crc_of(0, len(data)))
    # Up to the last whole chunk before the end asked for.
    assert crc.span_digest(0, 3 * CHUNK + 5) == (3 * CHUNK, crc_of(0, 3 * CHUNK))
    assert crc.span_digest(0, CHUNK - 1) is None  # inside the first chunk
    assert crc.span_digest(1, 3 * CHUNK) is None  # off the grid
    # Only as far as the chunk digests are known.
    del crc.chunk_digests[2:]
    assert crc.span_digest(0, 5 * CHUNK) == (2 * CHUNK, crc_of(0, 2 * CHUNK))
    # sha1 digests do not combine: one chunk.
    sha1 = scan(payload, CHUNK, "sha1")
    assert sha1.span_digest(0, 3 * CHUNK) == (CHUNK, hashlib.sha1(data[:CHUNK]).digest())


def patches(server: LiveServer, path: Path, store: Path, options: UploadOptions):  # type: ignore[no-untyped-def]
    """Upload ``path``; the (Content-Length, Upload-Checksum) of every PATCH."""
    seen: list[tuple[int, str | None]] = []

    def factory():  # type: ignore[no-untyped-def]
        session = make_session()
        original = session.send

        def send(request, **kwargs):  # type: ignore[no-untyped-def]
            if request.method == "PATCH":
                headers = request.headers
                seen.append((int(headers["Content-Length"]), headers.get("Upload-Checksum")))
            return original(request, **kwargs)

        session.send = send  # type: ignore[method-assign]
        return session

    target = ReportTarget("O4", "S230518h", "llo", 1)
    result = ReportUploader(server.url, target, options, factory, ResumeStore(store)).upload(path)
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    published = server.published(path.name)
    assert published.read_bytes() == path.read_bytes()
    return seen


@pytest.fixture
def short_link(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback taken as the short link it is, however slowly a busy machine
    answers: the client sizes pieces by time only on a link whose round trip
    it measured at ``LONG_ROUND_TRIP`` or more, and a loaded server's answers
    on loopback have been seen to take that long.  These tests check the
    rules for a short link; those for a long one are
    ``test_client_link_sizing``'s."""
    monkeypatch.setattr(pieces, "LONG_ROUND_TRIP", math.inf)
    monkeypatch.setattr(sender, "LONG_ROUND_TRIP", math.inf)


@pytest.fixture
def payload_path(tmp_path: Path) -> Path:
    path = tmp_path / "summary.bin"
    path.write_bytes(os.urandom(40 * CHUNK + 1234))
    return path


@pytest.mark.parametrize("checksums", [True, False])
def test_pieces_grow_in_whole_chunks_on_a_good_link(
    live_server: LiveServer, payload_path: Path, tmp_path: Path, checksums: bool, short_link: None
) -> None:
    # Whole-piece checksums (as against a server without block checksums).
    options = UploadOptions(
        chunk_size=CHUNK,
        max_piece=8 * CHUNK,
        checksums=checksums,
        overlap_min_size=MiB,
        block_checksums=False,
    )
    seen = patches(live_server, payload_path, tmp_path / "store", options)
    total = payload_path.stat().st_size

    sizes = [size for size, _ in seen]
    # With checksums a piece is also kept within 1/8 of what got through before.
    assert max(sizes) == 8 * CHUNK if not checksums else max(sizes) > CHUNK, sizes
    assert sum(sizes) == payload_path.stat().st_size  # nothing sent twice
    data = payload_path.read_bytes()
    offset = 0
    for size, checksum in seen:
        if size > CHUNK:  # whole chunks of the grid (up to the payload's end)
            assert offset % CHUNK == 0 and (size % CHUNK == 0 or offset + size == total)
        if checksums:
            # The server checked it (a wrong one is refused with 460); check it too.
            expected = zlib.crc32(data[offset : offset + size]).to_bytes(4, "big")
            assert checksum == "crc32 " + base64.b64encode(expected).decode()
        else:
            assert checksum is None
        offset += size


def test_pinned_pieces_never_exceed_the_chunk_size(
    live_server: LiveServer, payload_path: Path, tmp_path: Path, short_link: None
) -> None:
    options = UploadOptions(chunk_size=CHUNK, checksums=False, overlap_min_size=MiB)
    sizes = [size for size, _ in patches(live_server, payload_path, tmp_path / "s", options)]
    assert max(sizes) == CHUNK


def test_dqr_upload_grows_its_pieces_unless_the_chunk_size_is_given(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(40 * MiB))

    def largest_patch(revision: int, *extra: str) -> int:
        result = run_cli(
            "dqr-upload",
            *("-s", live_server.url, "-p", "O4", "-g", "S230518h", "-u", "llo"),
            *("--revision", str(revision), "-v", "--no-checksum", *extra, str(path)),
            env=client_env,
        )
        assert result.returncode == 0, result.stderr
        sizes = [
            int(line.split("PATCH ")[1].split(" bytes")[0])
            for line in result.stderr.splitlines()
            if ": PATCH " in line
        ]
        return max(sizes)

    assert largest_patch(1) > 8 * MiB
    assert largest_patch(2, "--chunk-size", "8") == 8 * MiB


def test_crc32_is_computed_by_isa_l_where_its_wheels_exist() -> None:
    from dqrxfer.crc32 import crc32

    require_isal()
    assert crc32.__module__.startswith("isal")
    assert crc32(b"dqrxfer", 7) == zlib.crc32(b"dqrxfer", 7)
