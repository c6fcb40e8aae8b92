"""dqr-upload against a real server process, directly and through a
fault-injecting proxy: flaky links, killed clients, refusals, a dead server,
tarballs and directories, several paths, parallel partial uploads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import requests

from dqrxfer.job import CARRIED_MAX
from support.cli import run_cli
from support.faultproxy import FaultProxy, Faults
from support.kill import kill_when, rerun_resumes
from support.live import LiveServer, free_port, tool
from support.tus import sha256_hex

MiB = 1024 * 1024


def upload_command(url: str, *paths: Path | str, revision: int = 1, **options: str) -> list[str]:
    command = ["dqr-upload", "-s", url, "-p", "O4", "-g", "S230518h", "-u", "llo"]
    command += ["--revision", str(revision)]
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        command += [flag] if value == "" else [flag, value]
    return command + [str(path) for path in paths]


FAST_RETRIES = {"retries": "30", "retry_wait": "0.05", "deadline": "300"}


def resume_entries(env: dict[str, str]) -> list[Path]:
    directory = Path(env["XDG_CACHE_HOME"]) / "dqrxfer" / "uploads"
    return sorted(directory.glob("*.json")) if directory.exists() else []


def server_extensions(server: LiveServer) -> set[str]:
    response = requests.options(f"{server.url}/files/", timeout=10)
    return {e.strip() for e in response.headers.get("Tus-Extension", "").split(",") if e.strip()}


def require_tar(server: LiveServer) -> None:
    """The server unpacks tar archives (the reports layer's job): a probe that
    fails, naming the refusal, rather than a skip that would hide a lost feature."""
    from dqrxfer.transport import encode_metadata

    metadata = {
        "project": "O4",
        "graceid": "S230518h",
        "uploader": "llo",
        "revision": "999",
        "filename": "probe.tar",
        "kind": "tar",
    }
    response = requests.post(
        f"{server.url}/files/",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "10240",
            "Upload-Metadata": encode_metadata(metadata),
        },
        timeout=10,
    )
    assert response.status_code == 201, f"the server refused a tar archive: {response.text}"


# -- flaky links ---------------------------------------------------------------


def test_twenty_uploads_over_a_link_that_cuts_and_stalls_all_arrive_intact(
    live_server: LiveServer, big_file: Path, tmp_path: Path, client_env: dict[str, str]
) -> None:
    """Each connection is cut after 0.25-16 MiB (about 8 cuts per 64 MiB) and
    one in twenty stalls; twenty uploads of a 64 MiB file (one command, two at
    a time) all complete byte-identical, and the bytes that crossed the link
    stay within 10 % of the payload."""
    size = big_file.stat().st_size
    expected = sha256_hex(big_file)
    paths = []
    for index in range(20):  # twenty names for the same bytes: twenty uploads
        path = tmp_path / f"big{index:02d}.bin"
        os.link(big_file, path)
        paths.append(path)
    faults = Faults(
        cut_after=(MiB // 4, 16 * MiB),
        stall_probability=0.05,
        stall_after=(0, 8 * MiB),
        stall_seconds=2.0,
    )
    with FaultProxy(live_server.port, faults, seed=20) as proxy:
        result = run_cli(
            *upload_command(
                proxy.url,
                *paths,
                jobs="2",
                timeout="1.5",
                connect_timeout="1.5",
                **FAST_RETRIES,
            ),
            env=client_env,
            timeout=600,
        )
        counters = proxy.counters
    assert result.returncode == 0, result.stderr
    for path in paths:
        assert sha256_hex(live_server.published(path.name)) == expected
    ratio = counters.up_bytes / (20 * size)
    print(f"wire {ratio:.3f}x payload, {counters}")
    assert ratio <= 1.10, (ratio, counters, result.stderr)
    assert counters.cuts >= 20 * 4 and counters.stalls >= 1, counters  # it did misbehave
    assert result.stderr.count("INFO:dqr-xfer:Uploaded ") == 20
    assert resume_entries(client_env) == []


def upload_data_files(server: LiveServer) -> list[Path]:
    return [p for p in (server.data_dir / "uploads").glob("*") if p.is_file() and not p.suffix]


def kill_half_way(
    server: LiveServer, proxy: FaultProxy, big_file: Path, env: dict[str, str]
) -> tuple[list[str], Path]:
    """Start dqr-upload through a slow link and SIGKILL it when the server holds
    half of the payload; return its command and the server's data file (of
    the upload that carries the bytes: beside it there may be the final
    upload that will be made of it, empty)."""
    size = big_file.stat().st_size
    command = upload_command(proxy.url, big_file, **FAST_RETRIES)

    def half_way() -> bool:
        files = upload_data_files(server)
        return any(path.stat().st_size >= size // 2 for path in files)

    kill_when(command, env, half_way, "half of the payload on the server")
    data_file = max(upload_data_files(server), key=lambda path: path.stat().st_size)
    assert data_file.stat().st_size < size
    return command, data_file


def test_killed_upload_resumes_where_the_server_stopped(
    live_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    size = big_file.stat().st_size
    with FaultProxy(live_server.port, Faults(rate=32 * MiB)) as proxy:
        command, _ = kill_half_way(live_server, proxy, big_file, client_env)
        assert len(resume_entries(client_env)) == 1
        rerun_resumes(proxy, command, client_env, size)
    assert sha256_hex(live_server.published("big.bin")) == sha256_hex(big_file)
    assert resume_entries(client_env) == []  # finished: forgotten


def test_an_upload_the_server_forgot_starts_over(
    live_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    size = big_file.stat().st_size
    with FaultProxy(live_server.port, Faults(rate=32 * MiB)) as proxy:
        command, data_file = kill_half_way(live_server, proxy, big_file, client_env)
        data_file.unlink()  # as the server's cleanup of expired uploads does
        data_file.with_suffix(".info").unlink()
        proxy.faults = Faults()
        proxy.reset_counters()
        result = run_cli(*command, env=client_env, timeout=300)
        assert result.returncode == 0, result.stderr
        # The partial upload is gone (the final upload made of it may be
        # there already): a new one, and a new final upload.
        assert "the server no longer has the" in result.stderr
        assert "starting over" in result.stderr
        assert proxy.counters.up_bytes >= size
    assert sha256_hex(live_server.published("big.bin")) == sha256_hex(big_file)
    assert resume_entries(client_env) == []


# -- refusals and failures ------------------------------------------------------


def test_a_project_the_server_lacks_exits_2_with_its_projects(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    payload = tmp_path / "index.html"
    payload.write_text("<html/>")
    command = upload_command(live_server.url, payload)
    command[command.index("-p") + 1] = "O5"
    result = run_cli(*command, env=client_env)
    assert result.returncode == 2, result.stderr
    assert "project 'O5': the server has no such project (it has MDC, O4, personal, replay)" in (
        result.stderr
    )
    assert "retry" not in result.stderr  # a refusal is not retried
    assert resume_entries(client_env) == []


def test_server_down_exits_5_after_the_bounded_retries(
    tmp_path: Path, client_env: dict[str, str]
) -> None:
    payload = tmp_path / "index.html"
    payload.write_text("<html/>")
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_cli(*upload_command(url, payload, retries="3", retry_wait="0.2"), env=client_env)
    assert result.returncode == 5, result.stderr
    retries = [line for line in result.stderr.splitlines() if "; retry " in line]
    assert [line.split("; retry ")[1].split(" in ")[0] for line in retries] == [
        "1 of 3",
        "2 of 3",
        "3 of 3",
    ]
    assert f"cannot reach {url} (connection refused)" in retries[0]
    assert "gave up after 3 retries" in result.stderr
    assert time.monotonic() - started < 60


def test_a_stalled_server_is_timed_out_and_given_up_on(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    """Every connection stalls at once: no request may hang past its timeout."""
    payload = tmp_path / "index.html"
    payload.write_bytes(os.urandom(100_000))
    faults = Faults(stall_probability=1.0, stall_after=(0, 0), stall_seconds=60)
    with FaultProxy(live_server.port, faults) as proxy:
        started = time.monotonic()
        result = run_cli(
            *upload_command(
                proxy.url,
                payload,
                retries="2",
                retry_wait="0.1",
                timeout="1",
                connect_timeout="1",
            ),
            env=client_env,
        )
        elapsed = time.monotonic() - started
    assert result.returncode == 5, result.stderr
    assert "timed out" in result.stderr
    assert elapsed < 30


def test_unreadable_path_is_a_usage_error_before_any_traffic(
    tmp_path: Path, client_env: dict[str, str]
) -> None:
    good = tmp_path / "index.html"
    good.write_text("x")
    result = run_cli(
        *upload_command("http://127.0.0.1:9", good, tmp_path / "missing.json"), env=client_env
    )
    assert result.returncode == 2
    assert "missing.json: no such file or directory" in result.stderr
    assert "retry" not in result.stderr


# -- several paths, kinds, dry run ----------------------------------------------


def test_several_files_at_once_with_jobs(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    paths = []
    for index in range(5):
        path = tmp_path / f"file{index}.json"
        path.write_bytes(os.urandom(300_000 + index))
        paths.append(path)
    result = run_cli(
        *upload_command(live_server.url, *paths, jobs="3", subdir="tier1"), env=client_env
    )
    assert result.returncode == 0, result.stderr
    report_url = f"{live_server.url}/reports/O4/S230518h_dir/S230518h_llo_1/"
    assert result.stdout.splitlines() == [report_url] * 5
    for path in paths:
        assert live_server.published(f"tier1/{path.name}").read_bytes() == path.read_bytes()
    assert result.stderr.count("INFO:dqr-xfer:Uploaded ") == 5


def test_one_failure_among_several_paths_sets_the_exit_code(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    good = tmp_path / "index.html"
    good.write_text("fine")
    bad = tmp_path / "tiny.json"
    bad.write_text("{}")
    command = upload_command(live_server.url, good, bad, jobs="2")
    result = run_cli(*command, env=client_env)
    assert result.returncode == 0, result.stderr
    # Refused by the server (a project that does not exist): exit 2, nothing retried.
    command[command.index("-p") + 1] = "O5"
    result = run_cli(*command, env=client_env)
    assert result.returncode == 2
    assert "2 of 2 uploads failed" in result.stderr
    assert "retry" not in result.stderr


def test_dry_run_sends_nothing_and_says_what_would_happen(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    report = tmp_path / "S230518h_llo_1"
    report.mkdir()
    (report / "index.html").write_text("<html/>")
    tarball = tmp_path / "extra.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(report / "index.html", "index.html")
    # The server is asked what it takes and has (the project, the site, the
    # report's files), and nothing is sent.
    result = run_cli(
        *upload_command(
            live_server.url, report, tarball, report / "index.html", dry_run="", subdir="t1"
        ),
        env=client_env,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "Would upload" in line]
    assert len(lines) == 3
    assert "as kind=tar filename=S230518h_llo_1.tar" in lines[0]
    assert "as kind=tar filename=extra.tar.gz" in lines[1]
    assert "as kind=file filename=index.html" in lines[2]
    assert lines[2].endswith("O4/S230518h_dir/S230518h_llo_1/t1/")
    assert resume_entries(client_env) == []
    assert not live_server.published().exists()


def test_tarball_is_unpacked_into_the_report(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    require_tar(live_server)
    source = tmp_path / "src"
    (source / "plots").mkdir(parents=True)
    (source / "index.html").write_text("<html>tar</html>")
    (source / "plots" / "p.png").write_bytes(os.urandom(200_000))
    tarball = tmp_path / "report.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name in ("index.html", "plots/p.png"):
            tar.add(source / name, name)
    result = run_cli(*upload_command(live_server.url, tarball), env=client_env)
    assert result.returncode == 0, result.stderr
    for name in ("index.html", "plots/p.png"):
        assert live_server.published(name).read_bytes() == (source / name).read_bytes()


def test_directory_is_packed_streamed_and_unpacked_into_the_report(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    require_tar(live_server)
    report = tmp_path / "S230518h_llo_1"
    (report / "tier1" / "plots").mkdir(parents=True)
    (report / "index.html").write_text("<html>dir</html>")
    (report / "tier1" / "data.json").write_text("{}")
    (report / "tier1" / "plots" / "big.png").write_bytes(os.urandom(3 * MiB + 5))
    result = run_cli(
        *upload_command(live_server.url, report, chunk_size="1", subdir="full"), env=client_env
    )
    assert result.returncode == 0, result.stderr
    for name in ("index.html", "tier1/data.json", "tier1/plots/big.png"):
        landed = live_server.published(f"full/{name}")
        assert landed.read_bytes() == (report / name).read_bytes()


# -- parallel partial uploads ------------------------------------------------------


def test_parallel_upload_of_one_large_file(
    live_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    """With concatenation, four partial uploads and a final one; without it, one
    stream and a warning.  Either way the file arrives intact."""
    concatenation = "concatenation" in server_extensions(live_server)
    result = run_cli(
        *upload_command(live_server.url, big_file, parallel="4", verbose=""), env=client_env
    )
    assert result.returncode == 0, result.stderr
    assert sha256_hex(live_server.published("big.bin")) == sha256_hex(big_file)
    if concatenation:
        assert "as 4 partial uploads" in result.stderr
        assert len(upload_data_files(live_server)) >= 5
    else:
        assert "no concatenation extension: sending in one stream, not 4" in result.stderr
        assert len(upload_data_files(live_server)) == 1


def test_parallel_upload_resumes_after_a_kill(
    live_server: LiveServer, big_file: Path, client_env: dict[str, str]
) -> None:
    assert "concatenation" in server_extensions(live_server)
    size = big_file.stat().st_size
    with FaultProxy(live_server.port, Faults(rate=32 * MiB)) as proxy:
        command = upload_command(proxy.url, big_file, parallel="4", **FAST_RETRIES)

        def half_way() -> bool:
            return sum(p.stat().st_size for p in upload_data_files(live_server)) >= size // 2

        kill_when(command, client_env, half_way, "half of the payload on the server")
        rerun_resumes(proxy, command, client_env, size)
    assert sha256_hex(live_server.published("big.bin")) == sha256_hex(big_file)


# -- the Python API ----------------------------------------------------------------


def test_python_api_sends_every_request_through_the_given_session_with_timeouts(
    live_server: LiveServer, tmp_path: Path
) -> None:
    from dqrxfer.errors import UsageError
    from dqrxfer.resume import ResumeStore
    from dqrxfer.session import Timeouts, make_session
    from dqrxfer.upload import ReportTarget, ReportUploader, UploadOptions, upload

    seen: list[tuple[str, object, dict[str, str]]] = []

    def factory():  # type: ignore[no-untyped-def]
        session = make_session(timeouts=Timeouts(connect=7, read=11))
        original = session.send

        def send(request, **kwargs):  # type: ignore[no-untyped-def]
            seen.append((request.method, kwargs.get("timeout"), dict(request.headers)))
            return original(request, **kwargs)

        session.send = send  # type: ignore[method-assign]
        return session

    payload = tmp_path / "summary.json"
    payload.write_bytes(os.urandom(2 * MiB + 3))
    target = ReportTarget("O4", "S230518h", "virgo", 3, "tier2")
    store = ResumeStore(tmp_path / "store")
    plain = UploadOptions(chunk_size=MiB, checksums=False)
    result = ReportUploader(live_server.url, target, plain, factory, store).upload(payload)
    assert result.report_url == f"{live_server.url}/reports/O4/S230518h_dir/S230518h_virgo_3/"
    assert result.size == payload.stat().st_size and result.sent_bytes == result.size
    assert result.sha256 == sha256_hex(payload)
    methods = [method for method, _, _ in seen]
    assert methods == ["OPTIONS", "POST", "PATCH", "PATCH", "PATCH", "GET"]
    assert all(timeout == (7, 11) for _, timeout, _ in seen)
    assert not any("Upload-Checksum" in headers for _, _, headers in seen)

    # With per-chunk checksums (when the server offers them), every PATCH has one.
    seen.clear()
    offered = requests.options(f"{live_server.url}/files/", timeout=10).headers
    algorithms = offered.get("Tus-Checksum-Algorithm", "").split(",")
    uploader = ReportUploader(
        live_server.url, target, UploadOptions(chunk_size=MiB), factory, store
    )
    uploader.upload(payload)
    patches = [headers for method, _, headers in seen if method == "PATCH"]
    assert sum(int(h["Content-Length"]) for h in patches) == payload.stat().st_size
    if "block-checksum" in server_extensions(live_server):
        assert "crc32" in algorithms  # the cheapest on offer, for each block
        assert all(h["Upload-Block-Checksum"].startswith("crc32 ") for h in patches)
        assert not any("Upload-Checksum" in h for h in patches)
    elif "checksum" in server_extensions(live_server):
        assert "crc32" in algorithms  # the cheapest on offer
        assert all(h["Upload-Checksum"].startswith("crc32 ") for h in patches)
    else:
        assert not any("Upload-Checksum" in h for h in patches)

    # A project the server does not have is the caller's mistake (exit code 2).
    with pytest.raises(UsageError, match="the server has no such project") as refused:
        upload(live_server.url, [payload], ReportTarget("nope", "S230518h", "llo", 1))
    assert refused.value.exit_code == 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))


def test_a_terminal_gets_a_progress_bar_and_a_log_file_gets_lines(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    import pty

    payload = tmp_path / "data.bin"
    payload.write_bytes(os.urandom(3 * MiB))
    command = upload_command(live_server.url, payload, chunk_size="1")
    import fcntl
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    try:
        process = subprocess.Popen(
            [tool(command[0]), *command[1:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            env={**os.environ, **client_env},
        )
        os.close(terminal)
        screen = b""
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not data:
                break
            screen += data
        assert process.wait(timeout=60) == 0
    finally:
        os.close(controller)
    text = screen.decode("utf-8", "replace")
    assert "100%|" in text and "data.bin" in text  # tqdm's bar
    assert "| 3.0 MiB of 3.0 MiB [" in text and " MiB/s]" in text  # in the client's units
    assert not re.search(r"\b(kB|MB|GB)\b", text)
    assert "INFO:dqr-xfer:Uploaded " in text  # log lines still come, above the bar
    # Not a terminal: no bar, only lines.
    result = run_cli(*upload_command(live_server.url, payload, revision=2), env=client_env)
    assert result.returncode == 0
    assert "|" not in result.stderr and "\r" not in result.stderr


def damaged_patches(server: LiveServer) -> int:
    """PATCHes the server has answered 460 (checksum mismatch), from its access log."""
    return len(re.findall(r'"PATCH /files/\w+ HTTP/1\.1" 460 ', server.log()))


def test_a_chunk_damaged_in_transit_is_refused_by_its_checksum_and_sent_again(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    assert "checksum" in server_extensions(live_server)
    # Larger than what a POST may carry (CARRIED_MAX): the bytes go in a
    # PATCH, whose damaged piece the server answers with 460.  (A damaged
    # POST body is answered 201 with the blocks before the damage kept.)
    payload = tmp_path / "data.bin"
    payload.write_bytes(os.urandom(CARRIED_MAX + 2 * MiB))
    # (OPTIONS, the links API and the upload made meanwhile go out at once on
    # up to three connections, in any order: whichever carries the payload
    # has a byte flipped; the small requests end before the flipped offset.)
    refused_before = damaged_patches(live_server)
    with FaultProxy(live_server.port, Faults(corrupt_connections=3), seed=3) as proxy:
        result = run_cli(*upload_command(proxy.url, payload, **FAST_RETRIES), env=client_env)
        corruptions = proxy.counters.corruptions
    assert result.returncode == 0, result.stderr
    assert corruptions >= 1
    # The server caught it.  It may answer 460 before the rest of the body
    # arrives and close the connection; the client then sees the cut first.
    assert damaged_patches(live_server) > refused_before, live_server.log()
    assert (
        "a piece arrived damaged (checksum mismatch, 460)" in result.stderr
        or "lost the connection" in result.stderr
    ), result.stderr
    assert live_server.published("data.bin").read_bytes() == payload.read_bytes()
    # Without per-chunk checksums the damage is caught at the end, by the sha256.
    with FaultProxy(live_server.port, Faults(corrupt_connections=4), seed=3) as proxy:
        result = run_cli(
            *upload_command(proxy.url, payload, revision=2, no_checksum="", **FAST_RETRIES),
            env=client_env,
        )
    assert result.returncode == 4, result.stderr
    assert "sha256" in result.stderr
    assert not live_server.published("data.bin", revision=2).exists()
