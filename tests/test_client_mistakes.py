"""The users' most common mistakes, each answered by the real commands in one
line with the right exit code, leaving nothing behind: a bad server URL
(from the option, the environment or the config file), a broken config file,
a URL that is not a dqrxfer server, a server that is down, options of the old
tool, a detector name for a site, a lower-case graceid, a project the server
does not have; and a command interrupted by SIGTERM or Ctrl-C saying how far
it got."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from support.cli import run_cli
from support.faultproxy import FaultProxy, Faults
from support.live import LiveServer, free_port, tool
from support.tus import sha256_hex, wait_for
from support.tus import write_config as write_server_config

MiB = 1024 * 1024
IDENTITY = ["-p", "O4", "-g", "S230518h", "-u", "llo", "--revision", "1"]
#: Protocol words that have no place in a message at the default level.
PROTOCOL_WORDS = ("OPTIONS", "PATCH", "HEAD", "POST", "GET ", "Invalid", "<html", "<!doctype")


def resume_entries(env: dict[str, str]) -> list[Path]:
    directory = Path(env["XDG_CACHE_HOME"]) / "dqrxfer" / "uploads"
    return sorted(directory.glob("*.json")) if directory.exists() else []


def nothing_stored(server: LiveServer) -> bool:
    """No upload and no report on ``server``."""
    uploads = server.data_dir / "uploads"
    stored = [p for p in uploads.iterdir() if p.is_file()] if uploads.exists() else []
    reports = server.data_dir / "reports"
    published = [p for p in reports.rglob("*") if p.is_file()] if reports.exists() else []
    return stored == [] and published == []


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ERROR:")]


def write_config(env: dict[str, str], text: str) -> Path:
    path = Path(env["XDG_CONFIG_HOME"]) / "dqrxfer" / "client.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def page(tmp_path: Path) -> Path:
    path = tmp_path / "index.html"
    path.write_text("<html>report</html>")
    return path


# -- 1. the server URL and the config file ---------------------------------------


BAD_URLS = [
    ("127.0.0.1:8080", "no scheme: did you mean 'https://127.0.0.1:8080'?"),
    ("ftp://dqr.example.org", "the scheme must be http or https, not 'ftp'"),
    ("http://[::1", "malformed (Invalid IPv6 URL)"),
    ("http://dqr.example.org:port", "malformed"),
    ("https://", "no host"),
]


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
@pytest.mark.parametrize("source", ["option", "environment", "file"])
def test_a_bad_server_url_is_a_usage_error_naming_it_and_where_it_came_from(
    url: str, reason: str, source: str, page: Path, client_env: dict[str, str]
) -> None:
    env = dict(client_env)
    args = ["dqr-upload", *IDENTITY, str(page)]
    if source == "option":
        args[1:1] = ["-s", url]
        where = "from -s/--server"
    elif source == "environment":
        env["DQRXFER_SERVER"] = url
        where = "from environment variable DQRXFER_SERVER"
    else:
        config = write_config(env, f'server = "{url}"\n')
        where = f"from 'server' in {config}"
    result = run_cli(*args, env=env, timeout=30)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result.stderr)
    assert line.startswith(f"ERROR:dqr-xfer:server URL {url!r} ({where}): {reason}"), line
    assert "retry" not in result.stderr and "Traceback" not in result.stderr
    assert resume_entries(env) == []


@pytest.mark.parametrize("command", ["dqr-ping", "dqr-batch-upload"])
def test_the_other_commands_check_the_server_url_too(
    command: str, tmp_path: Path, client_env: dict[str, str]
) -> None:
    args = [command, "-s", "127.0.0.1:8080"]
    if command == "dqr-batch-upload":
        args += ["-p", "O4", str(tmp_path)]
    result = run_cli(*args, env=client_env, timeout=30)
    assert result.returncode == 2, result.stderr
    assert error_lines(result.stderr) == [
        "ERROR:dqr-xfer:server URL '127.0.0.1:8080' (from -s/--server): no scheme: did you "
        "mean 'https://127.0.0.1:8080'?"
    ]


def test_a_malformed_config_file_is_named_with_its_line(
    live_server: LiveServer, page: Path, client_env: dict[str, str]
) -> None:
    config = write_config(client_env, f"# mine\nserver = {live_server.url}\n")
    result = run_cli("dqr-upload", *IDENTITY, str(page), env=client_env, timeout=30)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result.stderr)
    assert line.startswith(f"ERROR:dqr-xfer:{config}: not valid TOML: ")
    assert "line 2" in line
    assert "Traceback" not in result.stderr
    assert nothing_stored(live_server) and resume_entries(client_env) == []


def test_an_unknown_key_in_the_config_file_is_warned_about_by_name(
    live_server: LiveServer, client_env: dict[str, str]
) -> None:
    config = write_config(client_env, f'server = "{live_server.url}"\nsever = "typo"\n')
    result = run_cli("dqr-ping", "-n", "1", env=client_env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"WARNING:dqr-xfer:{config}: unknown key 'sever' ignored (known: server)" in (
        result.stderr
    )


# -- 2. what happened, in the user's words ------------------------------------------


def test_a_url_with_a_wrong_path_is_not_a_dqrxfer_server(
    live_server: LiveServer, page: Path, client_env: dict[str, str]
) -> None:
    server = f"{live_server.url}/dqr"
    result = run_cli("dqr-upload", "-s", server, *IDENTITY, str(page), env=client_env)
    assert result.returncode == 2, result.stderr
    # The server as a whole is wrong, not one file: the line names no file.
    assert error_lines(result.stderr) == [
        f"ERROR:dqr-xfer:{server} is not a dqrxfer server (404): check -s/--server"
    ]
    assert not any(word in result.stderr for word in PROTOCOL_WORDS), result.stderr
    assert nothing_stored(live_server) and resume_entries(client_env) == []
    # The protocol's detail is there for -v: the first request, asking what
    # the server has of the report, met a 404.
    verbose = run_cli("dqr-upload", "-v", "-s", server, *IDENTITY, str(page), env=client_env)
    assert verbose.returncode == 2
    assert re.search(
        rf"DEBUG:dqr-xfer:GET {re.escape(server)}/api/v1/events/S230518h/reports\S*: HTTP 404",
        verbose.stderr,
    ), verbose.stderr
    # The other commands say the same.
    ping = run_cli("dqr-ping", "-s", server, env=client_env)
    assert ping.returncode == 2, ping.stderr
    assert error_lines(ping.stderr) == [
        f"ERROR:dqr-xfer:{server} is not a dqrxfer server (404): check -s/--server"
    ]
    assert ping.stdout == ""
    report = page.parent / "tree" / "S230518h_dir" / "S230518h_llo_1"
    report.mkdir(parents=True)
    (report / "index.html").write_text("<html/>")
    batch = run_cli("dqr-batch-upload", "-s", server, "-p", "O4", str(report), env=client_env)
    assert batch.returncode == 2, batch.stderr
    assert error_lines(batch.stderr) == [
        f"ERROR:dqr-xfer:{server} is not a dqrxfer server (404): check -s/--server"
    ]
    assert nothing_stored(live_server) and resume_entries(client_env) == []


def test_another_web_site_is_not_a_dqrxfer_server(
    page: Path, tmp_path: Path, client_env: dict[str, str]
) -> None:
    """A plain web server (Python's http.server: no OPTIONS, 404 for the API)."""
    port = free_port()
    site = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(server), 30, what="http.server")
        upload = run_cli("dqr-upload", "-s", server, *IDENTITY, str(page), env=client_env)
        ping = run_cli("dqr-ping", "-s", server, env=client_env)
    finally:
        site.kill()
        site.wait()
    assert upload.returncode == 2, upload.stderr
    # Both asked its API first (what it has of the report; who is logged in).
    for result in (upload, ping):
        assert result.returncode == 2, result.stderr
        assert error_lines(result.stderr) == [
            f"ERROR:dqr-xfer:{server} is not a dqrxfer server (404): check -s/--server"
        ]
    for result in (upload, ping):
        assert "retry" not in result.stderr
        assert not any(word in result.stderr for word in PROTOCOL_WORDS), result.stderr
    assert resume_entries(client_env) == []


def answers(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
    except requests.ConnectionError:
        return False
    return True


def test_a_server_that_is_down_cannot_be_reached(page: Path, client_env: dict[str, str]) -> None:
    server = f"http://127.0.0.1:{free_port()}"
    options = ["--retries", "1", "--retry-wait", "0.05"]
    result = run_cli("dqr-upload", "-s", server, *options, *IDENTITY, str(page), env=client_env)
    assert result.returncode == 5, result.stderr
    # The first step, comparing with the server's copy of the report, is named.
    assert error_lines(result.stderr) == [
        "ERROR:dqr-xfer:S230518h_llo_1 (comparing with the server's copy): gave up after 1 "
        f"retries: cannot reach {server} (connection refused)"
    ]
    assert not any(word in result.stderr for word in PROTOCOL_WORDS), result.stderr
    assert "API" not in result.stderr, result.stderr
    assert resume_entries(client_env) == []
    verbose = run_cli(
        "dqr-upload", "-v", "-s", server, *options, *IDENTITY, str(page), env=client_env
    )
    assert f"DEBUG:dqr-xfer:GET {server}/api/v1/events/S230518h/reports: ConnectionError(" in (
        verbose.stderr
    )


# -- 6. who you are -------------------------------------------------------------------


def test_ping_says_whom_it_logged_in_as(live_server: LiveServer) -> None:
    result = run_cli("dqr-ping", "-s", live_server.url, "-n", "1")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"INFO:dqr-xfer:Logged in to {live_server.url} as nobody "
        "(the server asks for no authentication)"
    )


# -- 7. options of the old tool -------------------------------------------------------


@pytest.mark.parametrize("option", [["--set-dir", "/home/dqr/S230518h_llo_1"], ["--set-dir"]])
def test_set_dir_says_where_registration_went(
    option: list[str], live_server: LiveServer, page: Path, client_env: dict[str, str]
) -> None:
    result = run_cli(
        "dqr-upload", "-s", live_server.url, *option, *IDENTITY, str(page), env=client_env
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dqr-upload: error: --set-dir (registering a report already on ")
    assert "'dqrxfer-server reports register" in last
    assert nothing_stored(live_server)
    # Before the check of the required options: the only complaint.
    alone = run_cli("dqr-upload", "--set-dir", "/somewhere", env=client_env)
    assert alone.returncode == 2
    assert "required" not in alone.stderr and "dqrxfer-server reports register" in alone.stderr


# -- 8. hints --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("detector", "site"), [("L1", "llo"), ("H1", "lho"), ("V1", "virgo"), ("k1", "kagra")]
)
def test_a_detector_name_for_the_site_gets_a_hint(
    detector: str, site: str, live_server: LiveServer, page: Path, client_env: dict[str, str]
) -> None:
    args = ["-s", live_server.url, "-p", "O4", "-g", "S230518h", "-u", detector, "--revision", "1"]
    result = run_cli("dqr-upload", *args, str(page), env=client_env)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result.stderr)
    assert line.endswith(f"(got {detector!r}); did you mean {site}?"), line
    assert nothing_stored(live_server)


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("s230518h", "S230518h"), ("S230518H", "S230518h"), ("gw230518a", "GW230518A")],
)
def test_a_graceid_in_the_wrong_case_gets_a_hint(
    typed: str, meant: str, live_server: LiveServer, page: Path, client_env: dict[str, str]
) -> None:
    args = ["-s", live_server.url, "-p", "O4", "-g", typed, "-u", "llo", "--revision", "1"]
    result = run_cli("dqr-upload", *args, str(page), env=client_env)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result.stderr)
    assert line.startswith("ERROR:dqr-xfer:graceid: must be a superevent"), line
    assert line.endswith(f"(got {typed!r}); did you mean {meant}?"), line
    assert nothing_stored(live_server)


def test_a_project_the_server_lacks_is_a_usage_error_listing_its_projects(
    live_server: LiveServer, page: Path, tmp_path: Path, client_env: dict[str, str]
) -> None:
    big = tmp_path / "big.bin"  # large enough to go as a partial upload
    big.write_bytes(os.urandom(65 * MiB))
    args = ["-s", live_server.url, "-p", "O5", "-g", "S230518h", "-u", "llo", "--revision", "1"]
    for path in (page, big):
        result = run_cli("dqr-upload", *args, str(path), env=client_env)
        assert result.returncode == 2, result.stderr
        assert error_lines(result.stderr) == [
            f"ERROR:dqr-xfer:{path}: project 'O5': the server has no such project "
            "(it has MDC, O4, personal, replay)"
        ]
        assert "retry" not in result.stderr and "Upload-Concat" not in result.stderr
    assert nothing_stored(live_server) and resume_entries(client_env) == []


def test_a_field_the_server_refuses_reads_the_same_for_a_payload_sent_in_parts(
    tmp_path: Path, page: Path, client_env: dict[str, str]
) -> None:
    """A site the server does not take (its own ``sites``), refused for a
    payload sent whole and for one sent as partial uploads (``--parallel``):
    the same line, naming the field and the rule, no protocol words."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = write_server_config(
        tmp_path / "server.toml", data_dir=str(data_dir), sites=["llo", "lho", "virgo"]
    )
    server = LiveServer(data_dir, config=config).start()
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * MiB))
    args = ["-s", server.url, "-p", "O4", "-g", "S230518h", "-u", "kagra", "--revision", "1"]
    try:
        whole = run_cli("dqr-upload", *args, str(page), env=client_env)
        parts = run_cli(
            "dqr-upload", *args, "--parallel", "2", "--chunk-size", "1", str(big), env=client_env
        )
        assert nothing_stored(server)
    finally:
        server.discard()
    refusal = "server refused (400): uploader: must be one of lho, llo, virgo (got 'kagra')"
    for result, path in ((whole, page), (parts, big)):
        assert result.returncode == 4, result.stderr
        assert error_lines(result.stderr) == [f"ERROR:dqr-xfer:{path}: {refusal}"]
        assert "Upload-Concat" not in result.stderr and "Traceback" not in result.stderr
    assert resume_entries(client_env) == []


# -- 3. signals --------------------------------------------------------------------------


def upload_data_files(server: LiveServer) -> list[Path]:
    return [p for p in (server.data_dir / "uploads").glob("*") if p.is_file() and not p.suffix]


def bytes_on_server(server: LiveServer) -> int:
    return sum(path.stat().st_size for path in upload_data_files(server))


@contextlib.contextmanager
def upload_a_third(
    server: LiveServer, args: list[str], env: dict[str, str], stderr_path: Path, size: int
) -> Iterator[subprocess.Popen[bytes]]:
    """``args`` (a dqr-upload command line) running, its standard error in
    ``stderr_path``, once the server holds a third of the ``size`` bytes;
    killed on the way out if it is still running."""
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [tool(args[0]), *args[1:]],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=stderr,
        )

    def a_third_on_the_server() -> bool:
        assert process.poll() is None, stderr_path.read_text()
        return bytes_on_server(server) >= size // 3

    try:
        wait_for(a_third_on_the_server, 120, interval=0.01, what="a third on the server")
        yield process
    finally:
        process.kill()  # no-op once it ended
        process.wait()
        process.stdout.close()  # type: ignore[union-attr]


def the_error_line(stderr_path: Path, pattern: str) -> re.Match[str]:
    """The one error line of the command's standard error (in ``stderr_path``),
    matched in full by ``pattern``."""
    text = stderr_path.read_text()
    (line,) = error_lines(text)
    match = re.fullmatch(pattern, line)
    assert match, text
    return match


@pytest.mark.parametrize(
    ("sig", "code", "streams"),
    [(signal.SIGTERM, 143, "2"), (signal.SIGINT, 130, "1")],
    ids=["SIGTERM-two-streams", "SIGINT-one-stream"],
)
def test_an_interrupted_upload_says_how_far_it_got_and_the_same_command_resumes(
    sig: signal.Signals,
    code: int,
    streams: str,
    live_server: LiveServer,
    tmp_path: Path,
    client_env: dict[str, str],
) -> None:
    size = 24 * MiB
    payload = tmp_path / "big.bin"
    payload.write_bytes(os.urandom(size))
    stderr_path = tmp_path / "stderr.txt"
    with FaultProxy(live_server.port, Faults(rate=2 * MiB)) as proxy:
        # Pieces of 1 MiB: the server acknowledges something well before half way.
        # Two streams: threads sending that must not keep the command alive.
        args = ["dqr-upload", "-s", proxy.url, "--chunk-size", "1", "--parallel", streams]
        args += [*IDENTITY, str(payload)]
        with upload_a_third(live_server, args, client_env, stderr_path, size) as process:
            # The streams stand still from here (the command's own questions,
            # on new connections, go through): had the command waited for its
            # threads, it would not end.
            assert proxy.hold() >= int(streams)
            process.send_signal(sig)
            assert process.wait(timeout=60) == code
        match = the_error_line(
            stderr_path,
            rf"ERROR:dqr-xfer:interrupted by {sig.name}: (\d+\.\d) MiB of 24\.0 MiB on the server; "
            "run the same command again to resume",
        )
        on_server = float(match.group(1)) * MiB
        assert 0 < on_server <= bytes_on_server(live_server) + 0.05 * MiB, match.group(0)
        # The command ended with its threads: had it waited for them, they
        # would have sent (nearly) everything.
        assert bytes_on_server(live_server) < size - 2 * MiB
        assert not live_server.published().exists()
        assert len(resume_entries(client_env)) == 1
        # The same command resumes (the killed streams' connections end as
        # they would have: what they had sent, then their close).
        proxy.release()
        proxy.faults = Faults()
        result = run_cli(*args, env=client_env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "INFO:dqr-xfer:Resuming big.bin at" in result.stderr
    assert sha256_hex(live_server.published("big.bin")) == sha256_hex(payload)
    assert resume_entries(client_env) == []


def test_an_interrupted_upload_whose_server_does_not_answer_says_at_least_what_it_acknowledged(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    """The server stopped (SIGSTOP) when SIGTERM comes: the command's HEADs
    get no answer, and it still exits with 143, counting the bytes the server
    acknowledged as a lower bound."""
    size = 24 * MiB
    payload = tmp_path / "big.bin"
    payload.write_bytes(os.urandom(size))
    stderr_path = tmp_path / "stderr.txt"
    assert live_server.process is not None
    server_group = live_server.process.pid
    with FaultProxy(live_server.port, Faults(rate=2 * MiB)) as proxy:
        args = ["dqr-upload", "-s", proxy.url, "--chunk-size", "1", *IDENTITY, str(payload)]
        with upload_a_third(live_server, args, client_env, stderr_path, size) as process:
            os.killpg(server_group, signal.SIGSTOP)
            try:
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=60) == 143
            finally:
                os.killpg(server_group, signal.SIGCONT)
    match = the_error_line(
        stderr_path,
        r"ERROR:dqr-xfer:interrupted by SIGTERM: at least (\d+(?:\.\d)?) (B|MiB) of 24\.0 MiB "
        "on the server; run the same command again to resume",
    )
    acknowledged = float(match.group(1)) * (MiB if match.group(2) == "MiB" else 1)
    assert acknowledged <= bytes_on_server(live_server) + 0.05 * MiB, match.group(0)


def catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process ``pid`` has a handler of its own for ``sig`` (the
    kernel's mask of caught signals, ``SigCgt``)."""
    status = Path(f"/proc/{pid}/status").read_text()
    (mask,) = re.findall(r"^SigCgt:\s*([0-9a-f]+)$", status, re.MULTILINE)
    return bool(int(mask, 16) >> (sig - 1) & 1)


def stopped_while_loading(process: subprocess.Popen[bytes], library: str) -> None:
    """Return with ``process`` stopped (SIGSTOP) just after it loaded
    ``library`` (a shared object among its imports) and set the commands'
    start-up handlers (seen as SIGTERM caught, which Python leaves to the
    default; SIGINT it always catches): polled while stopped, so it stands
    within the few milliseconds after the later of the two.  (Under coverage,
    whose start-up in every process loads the library first, that is the
    handlers.)"""

    def loaded() -> bool:
        process.send_signal(signal.SIGSTOP)
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        if library in maps and catches(process.pid, signal.SIGTERM):
            return True
        process.send_signal(signal.SIGCONT)
        assert process.poll() is None, "the command ended before loading " + library
        return False

    wait_for(loaded, 60, interval=0.0005, what=f"{library} loaded")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_command_starts_up_is_one_line_without_a_traceback(
    sig: signal.Signals, code: int, page: Path, client_env: dict[str, str]
) -> None:
    """Ctrl-C (or SIGTERM) while dqr-upload still imports its modules (it
    has just loaded OpenSSL's hashing module, needed for the report's
    sha256, and has its options and server still to read)."""
    process = subprocess.Popen(
        [tool("dqr-upload"), "-s", "http://127.0.0.1:9", *IDENTITY, str(page)],
        env={**os.environ, **client_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stopped_while_loading(process, "_hashlib")
        process.send_signal(sig)
        process.send_signal(signal.SIGCONT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()  # no-op once it ended
        process.wait()
    stderr = err.decode()
    assert process.returncode == code, stderr
    assert stderr.splitlines() == [
        f"ERROR:dqr-xfer:interrupted by {sig.name} before any upload started; "
        "run the same command again"
    ]
    assert out == b""
    assert resume_entries(client_env) == []


# -- 9. units ------------------------------------------------------------------------------


def test_sizes_and_rates_are_written_in_binary_units() -> None:
    from dqrxfer.units import format_rate, format_size

    assert [format_size(n) for n in (0, 5, 1023, 1024, 1536, 80_000_000, 1288490188)] == [
        "0 B",
        "5 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "76.3 MiB",
        "1.2 GiB",
    ]
    assert format_size(5 * 2**40) == "5.0 TiB"
    assert format_rate(41.3 * MiB) == "41.3 MiB/s"
    assert format_rate(0.05 * MiB) == "0.050 MiB/s"


def test_the_upload_log_writes_sizes_and_rates_in_binary_units(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    payload = tmp_path / "data.bin"
    payload.write_bytes(os.urandom(3 * MiB // 2))
    args = ["-s", live_server.url, "--chunk-size", "1", *IDENTITY]
    result = run_cli("dqr-upload", *args, str(payload), env=client_env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"INFO:dqr-xfer:Uploading \S+ \(1\.5 MiB, kind=file\)", result.stderr)
    assert re.search(r"INFO:dqr-xfer:Uploaded \S+ \(1\.5 MiB, sha256 [0-9a-f]{64}\)", result.stderr)
    assert not re.search(r"\b(kB|MB|GB)\b", result.stderr)


@pytest.mark.parametrize("url", ["ftp://dqr.example.org", "127.0.0.1:8080"])
def test_the_python_api_refuses_a_url_it_cannot_send_to_without_retrying(
    url: str, page: Path, tmp_path: Path
) -> None:
    from dqrxfer.errors import UsageError
    from dqrxfer.resume import ResumeStore
    from dqrxfer.upload import ReportTarget, ReportUploader

    uploader = ReportUploader(
        url, ReportTarget("O4", "S230518h", "llo", 1), store=ResumeStore(tmp_path / "store")
    )
    with pytest.raises(UsageError, match=r"not an http\(s\) URL with a host") as refused:
        uploader.upload(page)
    assert str(refused.value) == f"server URL {url!r}: not an http(s) URL with a host"
    assert refused.value.exit_code == 2


def test_a_piece_answered_taken_over_by_another_request_goes_on_from_the_servers_offset(
    live_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    """The link holds back the rest of a PATCH the client has finished
    sending; a request for the upload (as the client's own retry over a new
    connection would make) takes the silent PATCH over, which is answered
    400 "... took it over; resume from Upload-Offset".  The client resumes
    from the server's offset: the upload is not refused."""
    size = 1 * MiB  # the whole piece fits in the sockets' buffers: the client reads the answer
    payload = tmp_path / "piece.bin"
    payload.write_bytes(os.urandom(size))
    stderr_path = tmp_path / "stderr.txt"
    with FaultProxy(live_server.port, Faults(rate=256 * 1024)) as proxy:
        args = ["dqr-upload", "-v", "-s", proxy.url, "--parallel", "1", *IDENTITY, str(payload)]
        with upload_a_third(live_server, args, client_env, stderr_path, size) as process:
            assert proxy.hold() >= 1
            (data_file,) = upload_data_files(live_server)
            asked = requests.head(
                f"{live_server.url}/files/{data_file.name}",
                headers={"Tus-Resumable": "1.0.0"},
                timeout=60,
            )
            assert asked.status_code == 200, asked.text
            assert process.wait(timeout=120) == 0, stderr_path.read_text()
    stderr = stderr_path.read_text()
    assert "took it over; resume from Upload-Offset" in stderr, stderr
    assert error_lines(stderr) == [], stderr
    assert sha256_hex(live_server.published("piece.bin")) == sha256_hex(payload.read_bytes())
