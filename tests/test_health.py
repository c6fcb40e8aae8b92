"""/healthz: every check passes on a sound server, and a failing check (no free
space left above the threshold, a reports root that cannot be written) turns
the answer into a 503 naming it (the app in process, support.inprocess).  The
workers' heartbeat, the systemd units' own probe commands and the probes under
remote-user authentication run against a live server."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from support.inprocess import InProcessServer, in_process_server
from support.live import LiveServer
from support.proxies import OPS
from support.tus import Served


def write_config(
    path: Path, data_dir: Path, *, min_free_space: int | None = None, o4_root: Path | None = None
) -> Path:
    reports = data_dir / "reports"
    lines = [f'data_dir = "{data_dir}"', "auto_upgrade = true"]
    if min_free_space is not None:
        lines.append(f"min_free_space = {min_free_space}")
    lines += [
        "[projects.O4]",
        f'reports_root = "{o4_root or reports / "O4"}"',
        'url = "/reports/O4/"',
        "[projects.replay]",
        f'reports_root = "{reports / "replay"}"',
        'url = "/reports/replay/"',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def healthz(server: Served) -> requests.Response:
    return requests.get(f"{server.url}/healthz", timeout=30)


def test_sound_server_passes_every_check(app_server: InProcessServer) -> None:
    response = healthz(app_server)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["status"] == "ok"
    checks = body["checks"]
    assert {"database", "uploads", "free_space"} <= set(checks)
    assert {f"reports:{name}" for name in ("O4", "MDC", "replay", "personal")} <= set(checks)
    assert {f"staging:{name}" for name in ("O4", "MDC", "replay", "personal")} <= set(checks)
    assert all(check["ok"] for check in checks.values()), checks
    assert checks["database"]["ms"] >= 0
    assert checks["free_space"]["min_bytes"] == 1024**3
    assert checks["free_space"]["filesystems"][0]["free_bytes"] > 0
    # The probe leaves nothing behind.
    assert not list(app_server.data_dir.rglob(".healthz-*"))


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm on this machine")
def test_workers_keep_their_heartbeat_file_in_memory(live_server: LiveServer) -> None:
    """gunicorn workers touch a heartbeat file on every turn of their loop;
    on the data disk that can wait for the journal commits of uploads'
    fsyncs, so the default puts it in /dev/shm."""
    healthz(live_server).raise_for_status()  # workers up
    assert live_server.process is not None
    workers = subprocess.run(
        ["pgrep", "-P", str(live_server.process.pid)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert workers
    for worker in workers:
        targets = [str(link.readlink()) for link in Path(f"/proc/{worker}/fd").iterdir()]
        heartbeat = [target for target in targets if "wgunicorn-" in target]
        assert heartbeat and all(t.startswith("/dev/shm/") for t in heartbeat), targets


def test_threshold_above_free_space_fails(data_dir: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "server.toml", data_dir, min_free_space=2**62)
    with in_process_server(data_dir, config) as server:
        response = healthz(server)
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "failing"
        free = body["checks"]["free_space"]
        assert free["ok"] is False and free["min_bytes"] == 2**62
        assert all(fs["free_bytes"] < 2**62 for fs in free["filesystems"])
        assert body["checks"]["database"]["ok"] is True
        assert body["checks"]["uploads"]["ok"] is True


def test_unwritable_reports_root_fails(data_dir: Path, tmp_path: Path) -> None:
    """A reports root whose parent is a regular file cannot be created or
    written, whoever runs the server (root included)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where a directory should be")
    config = write_config(tmp_path / "server.toml", data_dir, o4_root=blocker / "O4")
    with in_process_server(data_dir, config) as server:
        response = healthz(server)
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["reports:O4"] == {
            "path": str(blocker / "O4"),
            "ok": False,
            "error": f"{blocker} is not a directory",
        }
        assert checks["reports:replay"]["ok"] is True


def unit_command(unit: str, key: str, port: int) -> list[str]:
    """The command line of ``key`` in an ops/systemd unit, for a server on ``port``."""
    text = (OPS / "systemd" / unit).read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith(f"{key}="))
    return shlex.split(line.split("=", 1)[1].replace("127.0.0.1:8080", f"127.0.0.1:{port}"))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_systemd_probes_against_a_live_server(data_dir: Path, tmp_path: Path) -> None:
    server = LiveServer(data_dir).start()
    try:
        start_gate = unit_command("dqrxfer.service", "ExecStartPost", server.port)
        assert subprocess.run(start_gate, capture_output=True, timeout=120).returncode == 0
        probe = unit_command("dqrxfer-healthcheck.service", "ExecStart", server.port)
        result = subprocess.run(probe, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and '"status":"ok"' in result.stdout
    finally:
        server.stop()

    config = write_config(tmp_path / "server.toml", data_dir, min_free_space=2**62)
    server = LiveServer(data_dir, config=config).start()
    try:
        probe = unit_command("dqrxfer-healthcheck.service", "ExecStart", server.port)
        result = subprocess.run(probe, capture_output=True, text=True, timeout=120)
        # curl's 22: the HTTP status was an error; the body says which check failed.
        assert result.returncode == 22 and '"status":"failing"' in result.stdout
    finally:
        server.discard()


def test_probes_need_no_credentials_when_everything_else_does(data_dir: Path) -> None:
    server = LiveServer(
        data_dir, extra_args=["--auth", "remote-user", "--trusted-proxy", "127.0.0.1"]
    )
    # Readiness through the probe itself: ping needs a principal in this mode.
    server.wait_ready = lambda timeout: None  # type: ignore[method-assign]
    server.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = healthz(server)
                break
            except requests.ConnectionError:
                assert server.process is not None and server.process.poll() is None, server.log()
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.1)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ok"
        refused = requests.get(f"{server.url}/api/v1/ping", timeout=30)
        assert refused.status_code in (401, 403)
    finally:
        server.discard()
