"""The payload's hash starts before the upload: ``dqr-upload`` hashes its first
payload while it imports the HTTP stack, and the uploader adopts that pass.

Against real server processes: an adopted pass is used as it is (no second
pass over the payload), its chunk checksums dropped when the upload sends none,
replaced when it does not fit the upload's chunk grid, and waited for when the
server cannot concatenate (hash first, then send)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dqrxfer import hashing as hashing_module
from dqrxfer import payload as payload_module
from dqrxfer.payload import BackgroundScan, payload_for
from dqrxfer.resume import ResumeStore
from dqrxfer.session import make_session
from dqrxfer.upload import ReportTarget, ReportUploader, UploadOptions
from support.live import LiveServer

MiB = 1024 * 1024


@pytest.fixture
def payload_path(tmp_path: Path) -> Path:
    path = tmp_path / "summary.bin"
    path.write_bytes(os.urandom(3 * MiB + 12345))
    return path


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every pass over a payload the uploader starts itself (the real ones)."""
    started: list[object] = []

    class CountedScan(BackgroundScan):
        def start(self) -> BackgroundScan:
            started.append(self)
            return super().start()

    def counted_scan(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.append(args[0])
        return payload_module.scan(*args, **kwargs)

    monkeypatch.setattr(hashing_module, "BackgroundScan", CountedScan)
    monkeypatch.setattr(hashing_module, "scan", counted_scan)
    return started


def recording_factory(seen: list[tuple[str, dict[str, str]]]):  # type: ignore[no-untyped-def]
    def factory():  # type: ignore[no-untyped-def]
        session = make_session()
        original = session.send

        def send(request, **kwargs):  # type: ignore[no-untyped-def]
            seen.append((request.method, dict(request.headers)))
            return original(request, **kwargs)

        session.send = send  # type: ignore[method-assign]
        return session

    return factory


def upload_adopting(
    server: LiveServer,
    path: Path,
    store_dir: Path,
    options: UploadOptions,
    early_chunk: int,
    early_algorithm: str | None,
) -> tuple[object, BackgroundScan, list[tuple[str, dict[str, str]]]]:
    """Start a pass over ``path`` as dqr-upload does, then upload it adopting it."""
    payload = payload_for(path)
    early = BackgroundScan(payload, early_chunk, early_algorithm).start()
    seen: list[tuple[str, dict[str, str]]] = []
    uploader = ReportUploader(
        server.url,
        ReportTarget("O4", "S230518h", "llo", 1),
        options,
        recording_factory(seen),
        ResumeStore(store_dir),
    )
    uploader.adopt_scan(early)
    result = uploader.upload(uploader.plan(path, payload))
    return result, early, seen


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fresh_interpreter(code: str) -> str:
    """What ``code`` prints, run in a new Python process (fresh imports)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_dqr_upload_imports_the_http_stack_only_after_parsing_its_options() -> None:
    probe = (
        "import sys, dqrxfer.cli.upload\n"
        "print(sorted(m for m in ('requests', 'urllib3', 'gssapi') if m in sys.modules))"
    )
    assert fresh_interpreter(probe) == "[]"


@pytest.mark.parametrize(
    ("server_fixture", "creations"),
    [
        pytest.param("live_server", ["partial", "final"], id="concatenation"),
        pytest.param("plain_server", [None], id="without-concatenation"),
    ],
)
def test_an_adopted_pass_gives_the_sha256_and_the_chunk_checksums(
    request: pytest.FixtureRequest,
    server_fixture: str,
    creations: list[str | None],
    payload_path: Path,
    tmp_path: Path,
    passes: list[object],
) -> None:
    """With concatenation the payload is sent while the adopted pass goes on;
    without it the pass is waited for (hash first, then send).  Either way no
    second pass, and the pass's sha256 and chunk checksums are the ones used
    (whole-piece checksums: block checksums use none of the pass's)."""
    server: LiveServer = request.getfixturevalue(server_fixture)
    options = UploadOptions(chunk_size=MiB, overlap_min_size=MiB, block_checksums=False)
    result, early, seen = upload_adopting(
        server, payload_path, tmp_path / "store", options, MiB, "crc32"
    )

    assert passes == []  # no second pass over the payload
    assert result.sha256 == early.scan.sha256 == sha256(payload_path)  # type: ignore[attr-defined]
    # The requests with payload bytes: PATCHes, and a POST that carries a
    # small plain upload (creation-with-upload).
    pieces = [
        headers
        for _, headers in seen
        if headers.get("Content-Type") == "application/offset+octet-stream"
    ]
    assert pieces and all(h["Upload-Checksum"].startswith("crc32 ") for h in pieces)
    # The kind of upload each POST asked for (None: a plain upload, no Upload-Concat).
    concat = [h.get("Upload-Concat", "").split(";")[0] or None for m, h in seen if m == "POST"]
    assert concat == creations
    assert server.published("summary.bin").exists()


def test_an_adopted_pass_drops_its_chunk_checksums_when_none_are_sent(
    live_server: LiveServer, payload_path: Path, tmp_path: Path, passes: list[object]
) -> None:
    options = UploadOptions(chunk_size=MiB, checksums=False, overlap_min_size=MiB)
    result, early, seen = upload_adopting(
        live_server, payload_path, tmp_path / "store", options, MiB, "crc32"
    )

    assert passes == []
    assert early.scan.algorithm is None
    assert result.sha256 == sha256(payload_path)  # type: ignore[attr-defined]
    patches = [headers for method, headers in seen if method == "PATCH"]
    assert patches and not any("Upload-Checksum" in h for h in patches)


def test_an_adopted_pass_on_another_chunk_grid_is_replaced(
    live_server: LiveServer, payload_path: Path, tmp_path: Path, passes: list[object]
) -> None:
    options = UploadOptions(chunk_size=MiB, overlap_min_size=MiB, block_checksums=False)
    result, early, seen = upload_adopting(
        live_server, payload_path, tmp_path / "store", options, 2 * MiB, "crc32"
    )

    assert len(passes) == 1  # the uploader's own pass, on its grid
    assert early.wait(0)  # the adopted one was stopped, not left running
    assert result.sha256 == sha256(payload_path)  # type: ignore[attr-defined]
    patches = [headers for method, headers in seen if method == "PATCH"]
    assert all(h["Upload-Checksum"].startswith("crc32 ") for h in patches)


@pytest.mark.parametrize("spare", [True, False], ids=["two-cpus", "one-cpu"])
def test_on_one_cpu_the_hash_waits_until_the_start_up_is_over(
    live_server: LiveServer,
    payload_path: Path,
    client_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    spare: bool,
) -> None:
    """With a second CPU the first payload's hash starts before the HTTP stack
    is set up (the two run side by side); on a single CPU they would only take
    turns and delay the first request, so the hash starts once the uploader
    exists, and still overlaps the transfer."""
    from dqrxfer.cli import upload as cli_upload

    for name, value in client_env.items():
        monkeypatch.setenv(name, value)
    events: list[str] = []

    class RecordedScan(BackgroundScan):
        def start(self) -> BackgroundScan:
            events.append("hash started")
            return super().start()

    original_init = ReportUploader.__init__

    def recorded_init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        events.append("uploader made")
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(cli_upload, "spare_core", lambda: spare)
    monkeypatch.setattr(cli_upload, "BackgroundScan", RecordedScan)
    monkeypatch.setattr(ReportUploader, "__init__", recorded_init)
    target = ["-s", live_server.url, "-p", "O4", "-g", "S230518h", "-u", "llo"]
    code = cli_upload.main([*target, "-q", "--revision", "3", str(payload_path)])
    assert code == 0
    first = ["hash started", "uploader made"] if spare else ["uploader made", "hash started"]
    assert events[:2] == first, events
    assert events.count("hash started") == 1  # the uploader adopted that pass
    published = live_server.published(payload_path.name, revision=3)
    assert published.read_bytes() == payload_path.read_bytes()


def test_spare_core_follows_the_cpus_the_process_may_use() -> None:
    probe = (
        "import os\n"
        "from dqrxfer.cli.upload import spare_core\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "print(spare_core())"
    )
    assert fresh_interpreter(probe) == "False"
