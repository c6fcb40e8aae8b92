"""The deployment kit (ops/) is real configuration: each file is loaded or run
by the program it is for."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from dqrxfer.server.config import load_settings
from support.cli import run_cli
from support.live import LiveServer, tool
from support.proxies import OPS, behind_nginx, needs_nginx, substitute
from support.tus import dqr_upload_command, write_config


def test_example_server_config_is_valid() -> None:
    settings = load_settings(OPS / "server.toml")
    assert set(settings.projects) == {"O4", "replay", "MDC", "personal"}
    assert settings.serve_reports is False and settings.auto_upgrade is False
    assert settings.auth_mode == "remote-user"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    """systemd's own checker accepts the units (with this machine's paths for
    the executables they name)."""
    dqrxfer_server = tool("dqrxfer-server")
    for unit in sorted((OPS / "systemd").iterdir()):
        text = unit.read_text()
        if "/opt/dqrxfer/bin/dqrxfer-server" in text:
            text = substitute(text, {"/opt/dqrxfer/bin/dqrxfer-server": dqrxfer_server})
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(path) for path in tmp_path.iterdir())
    assert len(units) == 5
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True
    )
    # Unknown keys, bad values and missing executables are printed (not all fail the
    # exit code): a clean unit prints nothing.
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    service = (OPS / "systemd" / "dqrxfer.service").read_text()
    assert "--gunicorn-config" in service and "/healthz" in service
    assert "dqrxfer-server cleanup" in (OPS / "systemd" / "dqrxfer-cleanup.service").read_text()


def read_log_until(server: LiveServer, pattern: str, timeout: float = 30) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, server.log())
        if match:
            return match
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not in the server log:\n{server.log()}")


def test_gunicorn_config_file_with_command_line_overrides(data_dir: Path) -> None:
    server = LiveServer(
        data_dir,
        extra_args=["--gunicorn-config", str(OPS / "gunicorn.conf.py"), "--workers", "1"],
    ).start()
    try:
        response = requests.get(
            f"{server.url}/api/v1/ping",
            headers={"X-Remote-User": "someone@EXAMPLE.ORG"},
            timeout=10,
        )
        assert response.status_code == 200
        # The access format of the file: principal header, request time in ms.
        read_log_until(
            server, r'127\.0\.0\.1 someone@EXAMPLE\.ORG "GET /api/v1/ping HTTP/1\.1" 200 \d+ \d+ms'
        )
        # Logging in the LVK style from the file; --workers 1 won over the file's 4.
        assert len(re.findall(r"INFO:gunicorn\.error:Booting worker", server.log())) == 1
    finally:
        server.discard()


def test_serve_names_a_missing_gunicorn_config(data_dir: Path) -> None:
    result = run_cli(
        "dqrxfer-server",
        "serve",
        "--data-dir",
        str(data_dir),
        "--gunicorn-config",
        "/nonexistent.py",
    )
    assert result.returncode == 2
    assert "--gunicorn-config: no such file: /nonexistent.py" in result.stderr


@needs_nginx
def test_upload_through_the_nginx_front_end(data_dir: Path, tmp_path: Path) -> None:
    # nginx on this host is the proxy whose X-Forwarded-* the app believes.
    config = write_config(tmp_path / "server.toml", trusted_proxies=["127.0.0.1", "::1"])
    with behind_nginx(data_dir, tmp_path, config, "--workers", "2") as (server, nginx):
        payload = tmp_path / "data.bin"
        payload.write_bytes(os.urandom(24 * 1024 * 1024 + 5))
        result = run_cli(
            *dqr_upload_command(nginx.url, "--chunk-size", "16", str(payload)),
            env={"REQUESTS_CA_BUNDLE": str(nginx.cert)},
        )
        assert result.returncode == 0, result.stderr
        landed = data_dir / "reports/O4/S230518h_dir/S230518h_llo_1/data.bin"
        assert landed.read_bytes() == payload.read_bytes()
        # The URLs the app builds behind the proxy are the proxy's, over https.
        assert result.stdout.strip().startswith(f"{nginx.url}/")

        # A caller cannot name itself through the proxy: the header arrives empty.
        requests.get(
            f"{nginx.url}/api/v1/ping",
            headers={"X-Remote-User": "forged@EXAMPLE.ORG"},
            verify=str(nginx.cert),
            timeout=10,
        )
        read_log_until(server, r'127\.0\.0\.1 - "GET /api/v1/ping HTTP/1\.1" 200')
        assert "forged@EXAMPLE.ORG" not in server.log()
        # The health endpoint is for the host only (allowed from 127.0.0.1 here).
        assert "location = /healthz" in (OPS / "nginx" / "dqrxfer.conf").read_text()

        # Reports are served by nginx itself, dot names never (staging, swaps).
        published = requests.get(
            f"{nginx.url}/reports/O4/S230518h_dir/S230518h_llo_1/data.bin",
            verify=str(nginx.cert),
            timeout=10,
        )
        assert published.status_code == 200 and published.content == payload.read_bytes()
        staged = data_dir / "reports/O4/.dqrxfer-staging/work/leftover.html"
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_text("half-written")
        # Even where the web server could read it (the staging directory is
        # normally 0700), the front end's rule refuses it.
        for path in (staged, *staged.relative_to(data_dir / "reports").parents):
            (data_dir / "reports" / path).chmod(0o755 if path != staged else 0o644)
        for path in ("O4/.dqrxfer-staging/work/leftover.html", "O4/.dqrxfer-staging/"):
            hidden = requests.get(f"{nginx.url}/reports/{path}", verify=str(nginx.cert), timeout=10)
            assert hidden.status_code == 403, path
