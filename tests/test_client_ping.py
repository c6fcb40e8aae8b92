"""dqr-ping against real server processes: output format, clock offset (a
server whose clock runs ten minutes ahead, through libfaketime), failures and
exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support.cli import run_cli
from support.faultproxy import FaultProxy, Faults
from support.live import LiveServer, free_port

PING_LINE = re.compile(r"^INFO:dqr-xfer:Login: \d+\.\d\d, Ping: \d+\.\d\d, status:200$")
FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def clock_offset(stderr: str) -> float:
    match = re.search(r"^INFO:dqr-xfer:Clock offset: ([+-]\d+\.\d+) s", stderr, re.M)
    assert match, stderr
    return float(match.group(1))


def test_ping_prints_ok_lines_timings_success_and_elapsed(live_server: LiveServer) -> None:
    result = run_cli("dqr-ping", "-s", live_server.url, "-n", "4")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "OK\n" * 4
    lines = result.stderr.splitlines()
    assert sum(bool(PING_LINE.match(line)) for line in lines) == 4, result.stderr
    assert "INFO:dqr-xfer:Success = 100.0%" in lines
    assert re.match(r"^INFO:dqr-xfer:Elapsed time: \d+\.\ds$", lines[-1])
    assert abs(clock_offset(result.stderr)) < 5  # same host, same clock
    assert "WARNING" not in result.stderr


def test_ping_defaults_to_three_and_reads_the_server_from_the_environment(
    live_server: LiveServer, tmp_path: Path
) -> None:
    env = {"DQRXFER_SERVER": live_server.url, "XDG_CONFIG_HOME": str(tmp_path)}
    result = run_cli("dqr-ping", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "OK\n" * 3


def test_server_from_the_user_config_file(live_server: LiveServer, tmp_path: Path) -> None:
    config = tmp_path / "dqrxfer" / "client.toml"
    config.parent.mkdir()
    config.write_text(f'server = "{live_server.url}"\n')
    env = {"DQRXFER_SERVER": "", "XDG_CONFIG_HOME": str(tmp_path)}
    result = run_cli("dqr-ping", "-n", "1", env=env)
    assert result.returncode == 0, result.stderr
    # -s wins over the file.
    result = run_cli("dqr-ping", "-n", "1", "-s", f"http://127.0.0.1:{free_port()}", env=env)
    assert result.returncode == 5


@pytest.mark.skipif(not FAKETIME.exists(), reason="needs Debian's faketime package")
def test_a_clock_ten_minutes_off_is_warned_about_loudly(data_dir: Path) -> None:
    server = LiveServer(
        data_dir,
        # Monotonic clocks shift too (leaving them alone breaks sleeps): harmless.
        env={"LD_PRELOAD": str(FAKETIME), "FAKETIME": "+600"},
    ).start()
    try:
        result = run_cli("dqr-ping", "-s", server.url, "-n", "2")
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr  # the pings work: no Kerberos here
    assert 590 < clock_offset(result.stderr) < 610
    assert (
        "WARNING:dqr-xfer:THIS HOST'S CLOCK IS 600 s BEHIND THE SERVER'S: Kerberos refuses "
        "tickets beyond 300 s of skew" in result.stderr
    )
    assert "Fix the clock" in result.stderr


def test_server_down_exits_5_without_ok(tmp_path: Path) -> None:
    server = f"http://127.0.0.1:{free_port()}"
    result = run_cli("dqr-ping", "-s", server)
    assert result.returncode == 5
    assert result.stdout == ""
    assert f"cannot reach {server} (connection refused)" in result.stderr
    assert "Elapsed time:" in result.stderr


def test_failed_pings_are_counted_and_make_the_exit_code_non_zero(
    live_server: LiveServer,
) -> None:
    with FaultProxy(live_server.port) as proxy:
        assert run_cli("dqr-ping", "-s", proxy.url, "-n", "1").returncode == 0
        request_size = proxy.counters.up_bytes // 2  # login + one ping, identical requests
    # Cut every connection in the middle of its second request: login and the
    # first ping of each connection pass, the second request on it fails.
    cut = request_size + request_size // 2
    with FaultProxy(live_server.port, Faults(cut_after=(cut, cut))) as proxy:
        result = run_cli("dqr-ping", "-s", proxy.url, "-n", "3")
    assert result.returncode == 5, result.stderr
    assert result.stdout == "OK\n"
    assert "INFO:dqr-xfer:Success = 33.3%" in result.stderr
    assert result.stderr.count("ERROR:dqr-xfer:Login: ") == 2


def test_bad_count_is_a_usage_error(live_server: LiveServer) -> None:
    result = run_cli("dqr-ping", "-s", live_server.url, "-n", "0")
    assert result.returncode == 2
    assert "-n/--count: must be at least 1" in result.stderr
