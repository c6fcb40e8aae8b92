"""A large payload is sent as one partial upload while a thread hashes it, and a
final upload made of it carries the metadata with the sha256 (concatenation).

Against real server processes: the requests the client makes and in which
order, a hard-linked final upload, resuming after the client is killed while
the partial upload travels, just before the final upload is asked for and
just after it was created, a sha256 that does not match, and the fallback to
hashing first when the server does not advertise concatenation."""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dqrxfer.blocks import block_size
from dqrxfer.upload import TAIL
from support.cli import run_cli
from support.faultproxy import FaultProxy, Faults
from support.kill import kill_when, rerun_resumes
from support.live import NO_CONCATENATION, LiveServer
from support.tus import sha256_hex

MiB = 1024 * 1024
FAST_RETRIES = ["--retries", "30", "--retry-wait", "0.05", "--deadline", "300"]


@pytest.fixture
def server_without_unfinished(data_dir: Path) -> Iterator[LiveServer]:
    """The real server, not advertising concatenation-unfinished."""
    server = LiveServer(
        data_dir,
        extra_args=["--gunicorn-config", str(NO_CONCATENATION)],
        env={"DQRXFER_TEST_HIDDEN_EXTENSIONS": "concatenation-unfinished"},
    ).start()
    yield server
    server.discard()


def command(url: str, path: Path, *extra: str, revision: int = 1) -> list[str]:
    return [
        "dqr-upload",
        *("-s", url, "-p", "O4", "-g", "S230518h", "-u", "llo", "--revision", str(revision)),
        *FAST_RETRIES,
        *extra,
        str(path),
    ]


def entries(env: dict[str, str]) -> list[dict]:
    directory = Path(env["XDG_CACHE_HOME"]) / "dqrxfer" / "uploads"
    if not directory.exists():
        return []
    return [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]


def uploads(server: LiveServer) -> dict[str, dict]:
    """The server's uploads by id: their state files, and ``size`` of their data.

    Read while the server works: a state file being written at creation (in
    place: empty or torn for a moment) or renamed at completion is left for
    the next look."""
    found = {}
    for state in (server.data_dir / "uploads").glob("*.*"):
        if state.suffix in (".info", ".done"):
            try:
                info = json.loads(state.read_text())
                info["size"] = (state.parent / state.stem).stat().st_size
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            found[state.stem] = info
    return found


def finals(server: LiveServer) -> list[dict]:
    return [info for info in uploads(server).values() if info.get("concat") == "final"]


def partials(server: LiveServer) -> list[dict]:
    return [info for info in uploads(server).values() if info.get("concat") == "partial"]


# -- the requests ------------------------------------------------------------------


def recorded_upload(server: LiveServer, payload: Path, store_dir: Path):  # type: ignore[no-untyped-def]
    """Upload ``payload`` (1 MiB chunks, hashed while sent) through the API,
    recording every request: (method, URL, headers), and every answer:
    (method, URL, the answer's headers), each in the order they came."""
    from dqrxfer.resume import ResumeStore
    from dqrxfer.session import make_session
    from dqrxfer.upload import ReportTarget, ReportUploader, UploadOptions

    seen: list[tuple[str, str, dict[str, str]]] = []
    answered: list[tuple[str, str, dict[str, str]]] = []

    def factory():  # type: ignore[no-untyped-def]
        session = make_session()
        original = session.send

        def send(request, **kwargs):  # type: ignore[no-untyped-def]
            seen.append((request.method, request.url, dict(request.headers)))
            response = original(request, **kwargs)
            answered.append((request.method, request.url, dict(response.headers)))
            return response

        session.send = send  # type: ignore[method-assign]
        return session

    store = ResumeStore(store_dir)
    options = UploadOptions(chunk_size=MiB, checksums=False, overlap_min_size=MiB)
    target = ReportTarget("O4", "S230518h", "llo", 1)
    result = ReportUploader(server.url, target, options, factory, store).upload(payload)
    return result, seen, answered


def test_a_partial_upload_sent_while_hashed_then_a_final_one_with_the_metadata(
    live_server: LiveServer, tmp_path: Path
) -> None:
    payload = tmp_path / "summary.bin"
    payload.write_bytes(os.urandom(3 * MiB))
    result, seen, answered = recorded_upload(live_server, payload, tmp_path / "store")

    assert result.sha256 == sha256_hex(payload)
    assert result.sent_bytes == result.size == payload.stat().st_size
    # The final upload is asked for (on a session of its own) while the
    # partial upload travels: its POST comes anywhere among the PATCHes.
    methods = [method for method, _, _ in seen]
    assert methods[:2] == ["OPTIONS", "POST"] and methods[-1] == "GET"
    assert sorted(methods[2:-1]) == ["PATCH"] * 3 + ["POST"]
    (_, _, partial), (_, _, final) = [s for s in seen if s[0] == "POST"]
    assert partial["Upload-Concat"] == "partial"
    # The report metadata goes with the partial upload (checked before any byte is
    # sent), and with the sha256 with the final one.
    partial_metadata = dict(item.split(" ") for item in partial["Upload-Metadata"].split(","))
    assert base64.b64decode(partial_metadata["filename"]) == b"summary.bin"
    assert "sha256" not in partial_metadata
    partial_url = live_server.url + "/files/" + Path(final["Upload-Concat"]).name
    assert final["Upload-Concat"] == f"final;{partial_url}"
    assert "Upload-Length" not in final
    metadata = dict(item.split(" ") for item in final["Upload-Metadata"].split(","))
    assert base64.b64decode(metadata["sha256"]).decode() == result.sha256
    patches = [(url, headers) for method, url, headers in seen if method == "PATCH"]
    assert {url for url, _ in patches} == {partial_url}
    # The payload's last bytes wait for the final upload: when it was created
    # the partial upload was unfinished (it has no offset yet), and the last
    # PATCH, whose answer comes after the final upload's, carries them.
    ((_, _, created),) = [a for a in answered if a[0] == "POST" and a[1].endswith("/files/")][1:]
    assert "Upload-Offset" not in created
    answers = [method for method, _, _ in answered]
    assert answers.index("POST", 2) < len(answers) - 2 and answers[-2] == "PATCH"
    size = payload.stat().st_size
    offsets = [int(headers["Upload-Offset"]) for _, headers in patches]
    lengths = [int(headers["Content-Length"]) for _, headers in patches]
    assert offsets == [0, *itertools.accumulate(lengths)][:-1] and sum(lengths) == size
    assert result.upload_url != partial_url

    landed = live_server.published("summary.bin")
    assert landed.read_bytes() == payload.read_bytes()
    data = live_server.data_dir / "uploads"
    (final_upload,) = finals(live_server)
    assert result.upload_url.endswith(final_upload["id"])
    # One inode for the partial upload, the final one and the published file.
    assert (data / final_upload["id"]).stat().st_ino == landed.stat().st_ino
    assert (data / Path(partial_url).name).stat().st_ino == landed.stat().st_ino
    assert list((tmp_path / "store").glob("*.json")) == []


def test_without_concatenation_unfinished_the_final_upload_follows_the_whole_partial(
    server_without_unfinished: LiveServer, tmp_path: Path
) -> None:
    """Nothing is held back: the final upload is created once the partial one
    is complete, and its creation joins and publishes."""
    payload = tmp_path / "summary.bin"
    payload.write_bytes(os.urandom(3 * MiB))
    result, seen, _ = recorded_upload(server_without_unfinished, payload, tmp_path / "store")
    assert [method for method, _, _ in seen] == ["OPTIONS", "POST", *["PATCH"] * 3, "POST", "GET"]
    assert seen[-2][2]["Upload-Concat"].startswith("final;")
    assert result.sha256 == sha256_hex(payload)
    assert server_without_unfinished.published("summary.bin").read_bytes() == payload.read_bytes()


def test_a_large_file_from_the_command_line_is_hashed_while_it_is_sent(
    live_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    result = run_cli(*command(live_server.url, big_file), env=client_env)
    assert result.returncode == 0, result.stderr
    assert "kind=file) to http" in result.stderr and "hashing it meanwhile" in result.stderr
    assert "Hashing" not in result.stderr  # no hashing pass of its own
    assert sha256_hex(live_server.published("big.bin")) == sha256_hex(big_file)
    assert len(partials(live_server)) == len(finals(live_server)) == 1
    assert entries(client_env) == []


# -- resuming ------------------------------------------------------------------


def kill_half_way_then_resume(
    server: LiveServer, big_file: Path, env: dict[str, str], partial: bool = False
) -> tuple[dict, list[dict], subprocess.CompletedProcess[str]]:
    """Kill dqr-upload (on a slow link) once the server holds half of the
    payload (``partial``: in a partial upload, and the final upload was
    created, while the partial one travels: its last bytes wait for it),
    then run it again (on a fast one): it must resume, sending little more
    than the other half.  Returns the client's resume entry and the server's
    uploads as they were at the kill, and the re-run."""
    size = big_file.stat().st_size
    with FaultProxy(server.port, Faults(rate=32 * MiB)) as proxy:
        args = command(proxy.url, big_file)

        def half_way() -> bool:
            if not partial:
                found = list(uploads(server).values())
                return bool(found) and found[0]["size"] >= size // 2
            found = partials(server)
            kept = entries(env)
            return bool(found and kept) and found[0]["size"] >= size // 2 and kept[0]["url"]

        kill_when(args, env, half_way, "half of the payload on the server")
        (entry,) = entries(env)
        at_kill = list(uploads(server).values())
        result = rerun_resumes(proxy, args, env, size)
    return entry, at_kill, result


def test_killed_while_the_partial_upload_travels_resumes_it(
    live_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    entry, at_kill, result = kill_half_way_then_resume(
        live_server, big_file, client_env, partial=True
    )
    assert len(entry["partials"]) == 1 and entry["sha256"] == sha256_hex(big_file)
    assert sorted(upload.get("concat") for upload in at_kill) == ["final", "partial"]
    (final,) = [upload for upload in at_kill if upload.get("concat") == "final"]
    assert entry["url"].endswith(final["id"]) and final["size"] == 0  # not joined yet
    assert entry["partials"][0] in result.stderr
    assert sha256_hex(live_server.published("big.bin")) == sha256_hex(big_file)
    assert len(partials(live_server)) == len(finals(live_server)) == 1
    assert entries(client_env) == []


@pytest.mark.parametrize("point", ["before-final", "after-final"])
def test_killed_around_the_final_upload_creates_it_once(
    live_server: LiveServer,
    big_file: Path,
    client_env: dict[str, str],
    tmp_path: Path,
    point: str,
) -> None:
    """Killed just before the final upload is asked for (sha256 kept), or just
    after it was created (its URL kept), with the partial upload sent up to
    its held-back last bytes (they wait for the final upload; with block
    checksums from the start of their block): the re-run sends only those,
    does not hash again, and there is one final upload."""
    size = big_file.stat().st_size
    block = block_size("crc32", size)  # the blocks of the one PATCH
    marker = tmp_path / "fault.pid"
    with FaultProxy(live_server.port) as proxy:
        args = command(proxy.url, big_file, "-v")
        env = {**client_env, "DQRXFER_TEST_FAULT": f"{point}:{marker}"}

        def at_the_hold() -> bool:
            found = partials(live_server)
            return marker.exists() and bool(found) and found[0]["size"] >= size - TAIL - block

        kill_when(args, env, at_the_hold, f"the client at {point}, the last bytes held")
        (entry,) = entries(client_env)
        assert entry["sha256"] == sha256_hex(big_file)
        assert (entry["url"] is not None) == (point == "after-final")
        assert len(finals(live_server)) == (point == "after-final")
        (partial,) = partials(live_server)
        held = size - partial["size"]
        assert TAIL <= held <= TAIL + block, held
        proxy.reset_counters()
        result = run_cli(*args, env=client_env, timeout=300)
        assert result.returncode == 0, result.stderr
        assert f"Resuming big.bin at {(size - held) / MiB:.1f} MiB" in result.stderr
        assert "hashing it meanwhile" not in result.stderr
        assert proxy.counters.up_bytes < held + 64 * 1024, proxy.counters
    assert sha256_hex(live_server.published("big.bin")) == sha256_hex(big_file)
    (final,) = finals(live_server)
    assert final["size"] == size
    if entry["url"] is not None:
        assert entry["url"].endswith(final["id"])
    assert entries(client_env) == []


# -- refusal ------------------------------------------------------------------------


def test_a_payload_damaged_in_transit_is_refused_by_the_final_uploads_sha256(
    live_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    # OPTIONS, the links API and the upload made meanwhile go out at once on
    # up to three connections, in any order: whichever carries the payload has
    # a byte flipped; the small requests end before the flipped offset.
    with FaultProxy(live_server.port, Faults(corrupt_connections=4), seed=3) as proxy:
        result = run_cli(*command(proxy.url, big_file, "--no-checksum"), env=client_env)
        assert proxy.counters.corruptions == 1
    assert result.returncode == 4, result.stderr
    assert "hashing it meanwhile" in result.stderr
    assert "sha256: the received payload hashes to" in result.stderr
    assert not live_server.published("big.bin").exists()
    assert entries(client_env) == []  # a refusal is final: nothing to resume


def test_a_payload_the_server_refuses_is_refused_before_it_is_sent(
    live_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    args = command(live_server.url, big_file)
    args[args.index("-p") + 1] = "O5"
    result = run_cli(*args, env=client_env)
    assert result.returncode == 2, result.stderr  # a project the server lacks: usage
    assert "project 'O5': the server has no such project (it has MDC, O4, personal, replay)" in (
        result.stderr
    )
    assert uploads(live_server) == {}  # not even a partial upload
    assert entries(client_env) == []


# -- without concatenation -------------------------------------------------------------


def test_without_concatenation_the_payload_is_hashed_first_and_resumes_alike(
    plain_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    entry, at_kill, result = kill_half_way_then_resume(plain_server, big_file, client_env)
    assert entry["partials"] == [] and entry["sha256"] == sha256_hex(big_file)
    assert [upload.get("concat") for upload in at_kill] == [None]
    assert "hashing it meanwhile" not in result.stderr
    (upload,) = uploads(plain_server).values()
    assert upload.get("concat") is None and upload["metadata"]["sha256"] == sha256_hex(big_file)
    assert sha256_hex(plain_server.published("big.bin")) == sha256_hex(big_file)

    result = run_cli(
        *command(plain_server.url, big_file, "--parallel", "4", revision=2), env=client_env
    )
    assert result.returncode == 0, result.stderr
    assert "no concatenation extension: sending in one stream, not 4" in result.stderr
    assert sha256_hex(plain_server.published("big.bin", revision=2)) == sha256_hex(big_file)
    assert [u.get("concat") for u in uploads(plain_server).values()] == [None, None]
