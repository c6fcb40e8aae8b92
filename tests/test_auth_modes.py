"""The ``remote-user`` mode behind a trusted proxy, and the start-up checks of
``serve --auth``: a real server process, real sockets (the proxy is simulated
by a client connecting from another loopback address: support.remote_user)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from support import tusclient
from support.cli import run_cli
from support.live import LiveServer, free_port
from support.remote_user import PROXY, via_proxy

RULES = """
[[auth.rules]]
name = "people"
principals = ["*@LIGO.ORG"]

[[auth.rules]]
name = "llo robot"
principals = ["dqr/robot/*.ligo-la.caltech.edu@LIGO.ORG"]
sites = ["llo"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("remote-user")
    (root / "data").mkdir()
    config = root / "server.toml"
    config.write_text(f"auto_upgrade = true\n\n[auth]\nmode = 'remote-user'\n{RULES}")
    live = LiveServer(
        root / "data", config=config, extra_args=["--trusted-proxy", f"{PROXY}/32"]
    ).start()
    yield live
    live.discard()


def test_the_proxy_names_the_principal(server: LiveServer) -> None:
    response = via_proxy().get(
        f"{server.url}/api/v1/ping", headers={"X-Remote-User": "albert.einstein@LIGO.ORG"}
    )
    assert response.status_code == 200
    assert response.json()["principal"] == "albert.einstein@LIGO.ORG"
    assert "Set-Cookie" not in response.headers  # the proxy authenticates every request


def test_a_forged_header_from_elsewhere_is_ignored_and_refused(server: LiveServer) -> None:
    response = requests.get(
        f"{server.url}/api/v1/ping",
        headers={"X-Remote-User": "albert.einstein@LIGO.ORG"},
        timeout=10,
    )
    assert response.status_code == 403
    assert "127.0.0.1 is not a trusted proxy (X-Remote-User ignored)" in response.json()["error"]
    assert "ignored X-Remote-User from 127.0.0.1" in server.log()
    created = tusclient.create(
        requests.Session(), server.url, 10, project="O4"
    )  # no header at all: refused as well
    assert created.status_code == 403


def test_health_probes_need_no_credentials(server: LiveServer) -> None:
    response = requests.get(f"{server.url}/healthz", timeout=30)
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_the_proxy_without_a_user_is_a_401(server: LiveServer) -> None:
    response = via_proxy().get(f"{server.url}/api/v1/ping")
    assert response.status_code == 401
    assert response.json()["error"] == "the proxy passed no authenticated user"
    for bogus in ("(null)", "two words@LIGO.ORG", "x" * 300):
        response = via_proxy().get(f"{server.url}/api/v1/ping", headers={"X-Remote-User": bogus})
        assert response.status_code == 401
        assert response.json()["error"] == "the proxy passed a malformed user name"


def test_rules_apply_to_proxied_principals(server: LiveServer) -> None:
    robot = via_proxy()
    robot.headers["X-Remote-User"] = "dqr/robot/ldas-pcdev1.ligo-la.caltech.edu@LIGO.ORG"
    refused = tusclient.create(robot, server.url, 10, uploader="virgo")
    assert refused.status_code == 403
    assert "rule 'llo robot' allows only llo" in refused.text
    created = tusclient.create(robot, server.url, 10, uploader="llo")
    assert created.status_code == 201

    person = via_proxy()
    person.headers["X-Remote-User"] = "albert.einstein@LIGO.ORG"
    assert tusclient.head(person, created.headers["Location"]).status_code == 404
    assert tusclient.head(robot, created.headers["Location"]).status_code == 200
    assert tusclient.create(person, server.url, 10, uploader="virgo").status_code == 201


def serve(tmp_path: Path, *args: str) -> Any:
    (tmp_path / "data").mkdir(exist_ok=True)
    return run_cli(
        "dqrxfer-server",
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--port",
        str(free_port()),
        *args,
        timeout=60,
    )


def test_none_mode_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    result = serve(tmp_path, "--host", "0.0.0.0")
    assert result.returncode == 2
    assert "auth mode none (no authentication) listens on loopback only" in result.stderr
    result = serve(tmp_path, "--host", "0.0.0.0", "--auth", "none")
    assert result.returncode == 2


def test_remote_user_mode_needs_its_proxies(tmp_path: Path) -> None:
    result = serve(tmp_path, "--auth", "remote-user")
    assert result.returncode == 2
    assert "auth.trusted_proxies: remote-user mode needs the proxy addresses" in result.stderr
    result = serve(tmp_path, "--auth", "remote-user", "--trusted-proxy", "not-an-address")
    assert result.returncode == 2
    assert "--trusted-proxy: 'not-an-address' is not an IP address" in result.stderr


def test_gssapi_mode_needs_a_readable_keytab(tmp_path: Path) -> None:
    result = serve(tmp_path, "--auth", "gssapi", "--keytab", str(tmp_path / "missing.keytab"))
    assert result.returncode == 2
    assert "missing.keytab is not a readable file" in result.stderr
