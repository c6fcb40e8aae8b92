"""The commands through Kerberos, end to end: a real KDC (k5test), a real server
in ``gssapi`` mode, ``dqr-upload`` as a separate process with a user's ticket
or a robot's keytab, and what the user sees when credentials are missing,
expired or not allowed."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from dqrxfer.server.db import ReportFile, Upload
from support.faultproxy import FaultProxy, Faults
from support.kerberos import LLO_ROBOT, SERVICE, STRANGER, USER, Realm
from support.live import LiveServer, tool
from support.tus import random_file, sha256_hex

pytestmark = pytest.mark.kerberos

MiB = 1024 * 1024

#: One second: an upload of some size outlives several cookies, so the client
#: must authenticate again in the middle of it (and must not lose a byte).
SESSION_LIFETIME = "session_lifetime = 1"


@pytest.fixture(scope="module")
def server(kerberos: Realm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = kerberos.gssapi_server(tmp_path_factory.mktemp("auth-cli"), auth=SESSION_LIFETIME)
    yield live
    live.discard()


def localhost(server: LiveServer) -> str:
    """The server under the name its service principal has (HTTP/localhost)."""
    return f"http://localhost:{server.port}"


def upload(
    server_url: str,
    env: dict[str, str],
    *paths: Path,
    extra: tuple[str, ...] = (),
    **options: str,
) -> subprocess.CompletedProcess[str]:
    args = {"project": "O4", "graceid": "S230518h", "uploader": "llo", "revision": "1"}
    args.update(options)
    command = [tool("dqr-upload"), "-s", server_url, "--retries", "2"]
    for key, value in args.items():
        command += [f"--{key}", value]
    command += [*extra, *(str(path) for path in paths)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def principal_of(server: LiveServer, filename: str) -> set[str | None]:
    engine = create_engine(f"sqlite:///{server.data_dir / 'dqrxfer.sqlite'}")
    with Session(engine) as db:
        uploads = db.scalars(select(Upload).where(Upload.filename == filename)).all()
        files = db.scalars(select(ReportFile).where(ReportFile.relpath.endswith(filename))).all()
        found = {row.principal for row in uploads} | {row.principal for row in files}
    engine.dispose()
    return found


def small_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(10_000))
    return path


def test_upload_with_a_user_ticket(kerberos: Realm, server: LiveServer, tmp_path: Path) -> None:
    payload = small_file(tmp_path, "user.json")
    result = upload(
        localhost(server), kerberos.client_env(kerberos.user_ccache), payload, revision="2"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("/reports/O4/S230518h_dir/S230518h_llo_2/")
    landed = server.published("user.json", revision=2)
    assert landed.read_bytes() == payload.read_bytes()
    assert principal_of(server, "user.json") == {USER}


def test_upload_with_a_robot_keytab(kerberos: Realm, server: LiveServer, tmp_path: Path) -> None:
    payload = small_file(tmp_path, "robot.json")
    env = kerberos.client_env()  # no ticket at all: the keytab is the credential
    result = upload(
        localhost(server),
        env,
        payload,
        revision="3",
        extra=("--keytab", str(kerberos.llo_robot_keytab)),
    )
    assert result.returncode == 0, result.stderr
    assert principal_of(server, "robot.json") == {LLO_ROBOT}


def test_upload_with_krb5_client_ktname(
    kerberos: Realm, server: LiveServer, tmp_path: Path
) -> None:
    payload = small_file(tmp_path, "ktname.json")
    env = kerberos.client_env(
        tmp_path / "robot.ccache", KRB5_CLIENT_KTNAME=str(kerberos.llo_robot_keytab)
    )
    result = upload(localhost(server), env, payload, revision="4")
    assert result.returncode == 0, result.stderr
    assert principal_of(server, "ktname.json") == {LLO_ROBOT}


def test_100_mib_through_kerberos_arrives_byte_identical(
    kerberos: Realm, server: LiveServer, tmp_path: Path
) -> None:
    """A robot's 100 MiB upload over a slow link that drops connections: the
    session cookie (one second) expires many times on the way, so requests
    with bodies meet re-authentication, and resumes authenticate afresh.
    Not a byte may be lost or doubled (the body-resend trap)."""
    payload = tmp_path / "big.bin"
    digest = random_file(payload, 100)
    before = server.log().count(f"authenticated {LLO_ROBOT}")
    faults = Faults(rate=40 * MiB, cut_after=(30 * MiB, 60 * MiB))
    with FaultProxy(server.port, faults, seed=8) as proxy:
        result = upload(
            proxy.url,
            kerberos.client_env(),
            payload,
            revision="5",
            extra=(
                "--keytab",
                str(kerberos.llo_robot_keytab),
                "--service-principal",
                SERVICE,
                "--chunk-size",
                "4",
                "--retries",
                "8",
            ),
        )
        cuts = proxy.counters.cuts
    assert result.returncode == 0, result.stderr
    landed = server.published("big.bin", revision=5)
    assert landed.stat().st_size == 100 * MiB
    assert sha256_hex(landed) == digest
    assert cuts >= 1
    # At 40 MiB/s the upload takes over 2.5 s: cookies of one second ran out.
    assert server.log().count(f"authenticated {LLO_ROBOT}") - before >= 3


def ping(server_url: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    command = [tool("dqr-ping"), "-s", server_url, *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_ping_with_a_user_ticket(kerberos: Realm, server: LiveServer) -> None:
    result = ping(localhost(server), kerberos.client_env(kerberos.user_ccache), "-vv")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["OK", "OK", "OK"]
    assert f"Logged in to {localhost(server)} as {USER}" in result.stderr
    assert "Success = 100.0%" in result.stderr
    # The most verbose output shows the exchange, never a token.
    assert "Authenticate header: <redacted>" in result.stderr
    assert not re.search(r"Negotiate [A-Za-z0-9+/]{20}", result.stderr)


def test_ping_with_a_robot_keytab(kerberos: Realm, server: LiveServer) -> None:
    keytab = str(kerberos.llo_robot_keytab)
    result = ping(localhost(server), kerberos.client_env(), "--keytab", keytab)
    assert result.returncode == 0, result.stderr
    # Who is logged in is said at the default level.
    assert f"INFO:dqr-xfer:Logged in to {localhost(server)} as {LLO_ROBOT}\n" in result.stderr
    assert "Success = 100.0%" in result.stderr


def test_ping_without_a_ticket_exits_3(kerberos: Realm, server: LiveServer) -> None:
    result = ping(localhost(server), kerberos.client_env())
    assert result.returncode == 3, result.stderr
    assert "klist: No credentials cache found (filename: " in result.stderr
    assert "OK" not in result.stdout


def test_no_ticket_exits_3_with_the_klist_message(
    kerberos: Realm, server: LiveServer, tmp_path: Path
) -> None:
    payload = small_file(tmp_path, "none.json")
    env = kerberos.client_env()
    assert "KRB5_CLIENT_KTNAME" not in env
    result = upload(localhost(server), env, payload, revision="6")
    assert result.returncode == 3, result.stderr
    assert "klist: No credentials cache found (filename: " in result.stderr
    assert "kinit" in result.stderr and "--keytab" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_robot_keytab_that_is_not_there_is_named(
    kerberos: Realm, server: LiveServer, tmp_path: Path
) -> None:
    missing = tmp_path / "robot.keytab"
    env = {**kerberos.client_env(), "KRB5_CLIENT_KTNAME": f"FILE:{missing}"}
    result = ping(localhost(server), env)
    assert result.returncode == 3, result.stderr
    assert f"KRB5_CLIENT_KTNAME names keytab {missing}, which is not a readable file" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_ca_bundle_that_is_not_there_is_a_usage_error(
    kerberos: Realm, server: LiveServer, tmp_path: Path
) -> None:
    missing = tmp_path / "ca.pem"
    env = {**kerberos.client_env(), "REQUESTS_CA_BUNDLE": str(missing)}
    result = upload(localhost(server), env, small_file(tmp_path, "ca.json"), revision="8")
    assert result.returncode == 2, result.stderr
    assert f"REQUESTS_CA_BUNDLE: {missing} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_expired_ticket_exits_3_and_says_so(
    kerberos: Realm, server: LiveServer, tmp_path: Path
) -> None:
    ccache = tmp_path / "short.ccache"
    kerberos.kinit(USER, ccache, lifetime="2s")
    kerberos.wait_expired(ccache)
    payload = small_file(tmp_path, "expired.json")
    result = upload(localhost(server), kerberos.client_env(ccache), payload, revision="7")
    assert result.returncode == 3, result.stderr
    assert f"Kerberos ticket in {ccache} has expired" in result.stderr


def test_a_principal_not_allowed_gets_403_and_exit_4(
    kerberos: Realm, server: LiveServer, tmp_path: Path
) -> None:
    payload = small_file(tmp_path, "stranger.json")
    env = kerberos.client_env(kerberos.stranger_ccache)
    result = upload(localhost(server), env, payload, revision="8")
    assert result.returncode == 4, result.stderr
    assert "403" in result.stderr
    assert f"{STRANGER} may not upload to project O4: no rule in auth.rules" in result.stderr
    # The same person may use the project the rules give everyone.
    result = upload(localhost(server), env, payload, revision="8", project="personal")
    assert result.returncode == 0, result.stderr


def test_a_large_payload_not_allowed_is_refused_before_it_is_sent(
    kerberos: Realm, server: LiveServer, tmp_path: Path
) -> None:
    """A payload large enough to go as a partial upload (hashed meanwhile) is
    authorized when that partial upload is created, not after it was sent."""
    payload = tmp_path / "stranger.bin"
    with open(payload, "wb") as handle:
        for _ in range(64):
            handle.write(os.urandom(MiB))
    before = sorted((server.data_dir / "uploads").glob("*"))
    env = kerberos.client_env(kerberos.stranger_ccache)
    result = upload(localhost(server), env, payload, revision="8")
    assert result.returncode == 4, result.stderr
    assert f"{STRANGER} may not upload to project O4: no rule in auth.rules" in result.stderr
    assert sorted((server.data_dir / "uploads").glob("*")) == before  # nothing created


def test_a_robot_uploading_as_another_site_gets_403(
    kerberos: Realm, server: LiveServer, tmp_path: Path
) -> None:
    payload = small_file(tmp_path, "lho.json")
    result = upload(
        localhost(server),
        kerberos.client_env(),
        payload,
        revision="9",
        uploader="lho",
        extra=("--keytab", str(kerberos.llo_robot_keytab)),
    )
    assert result.returncode == 4, result.stderr
    assert "as site lho: rule 'llo robot' allows only llo" in result.stderr


def test_the_service_principal_can_be_named(
    kerberos: Realm, server: LiveServer, tmp_path: Path
) -> None:
    """Reached as 127.0.0.1 by a client that does not canonicalise host names,
    the server's principal is not HTTP/127.0.0.1: it must be named."""
    payload = small_file(tmp_path, "named.json")
    env = kerberos.client_env(kerberos.user_ccache, KRB5_CONFIG=kerberos.literal_names_config())
    result = upload(server.url, env, payload, revision="10")
    assert result.returncode == 3, result.stderr
    assert "cannot get a Kerberos service ticket for 127.0.0.1" in result.stderr
    assert "DQRXFER_SERVICE_PRINCIPAL" in result.stderr
    assert "Traceback" not in result.stderr and "requests_gssapi" not in result.stderr
    result = upload(server.url, env, payload, revision="10", extra=("--service-principal", SERVICE))
    assert result.returncode == 0, result.stderr
    env["DQRXFER_SERVICE_PRINCIPAL"] = SERVICE
    result = upload(server.url, env, payload, revision="11")
    assert result.returncode == 0, result.stderr


def test_a_server_without_authentication_needs_no_ticket(
    kerberos: Realm, live_server: LiveServer, tmp_path: Path
) -> None:
    payload = small_file(tmp_path, "dev.json")
    result = upload(live_server.url, kerberos.client_env(), payload)
    assert result.returncode == 0, result.stderr


def test_batch_upload_with_a_robot_keytab(
    kerberos: Realm, server: LiveServer, tmp_path: Path
) -> None:
    """dqr-batch-upload asks the (authenticated) links API what the server has
    and uploads the rest as the robot; the report of a site the robot may not
    upload for is refused, listed with the server's reason, and exits 4."""
    tree = tmp_path / "public_html" / "O4"
    for site in ("llo", "lho"):
        report = tree / "S230601x_dir" / f"S230601x_{site}_3"
        report.mkdir(parents=True)
        (report / "index.html").write_text(f"<html>{site}</html>")
    env = {**kerberos.client_env(), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [tool("dqr-batch-upload"), "-s", localhost(server), "-p", "O4", "--retries", "1"]
    command += ["--keytab", str(kerberos.llo_robot_keytab), str(tree)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 4, result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines()[1:-1]}
    assert rows["llo"].split()[3] == "uploaded"
    assert rows["lho"].split()[3] == "failed"
    assert (
        f"server refused (403): {LLO_ROBOT} may not upload to project O4 as site lho"
        in (rows["lho"])
    )
    landed = server.data_dir / "reports/O4/S230601x_dir/S230601x_llo_3/index.html"
    assert landed.read_text() == "<html>llo</html>"
    assert principal_of(server, "index.html") >= {LLO_ROBOT}
    assert not (server.data_dir / "reports/O4/S230601x_dir/S230601x_lho_3").exists()

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert "on server" in next(line for line in again.stdout.splitlines() if " llo " in line)


def test_batch_upload_without_a_ticket_says_so_once(
    kerberos: Realm, server: LiveServer, tmp_path: Path
) -> None:
    """The ticket is checked once, before any report is sent: one message, exit 3."""
    tree = tmp_path / "public_html" / "O4"
    for site in ("llo", "lho", "virgo"):
        report = tree / "S230602y_dir" / f"S230602y_{site}_1"
        report.mkdir(parents=True)
        (report / "index.html").write_text(f"<html>{site}</html>")
    env = {**kerberos.client_env(), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [tool("dqr-batch-upload"), "-s", localhost(server), "-p", "O4", str(tree)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("klist: No credentials cache found (filename: ") == 1
    assert "Traceback" not in result.stderr
    assert not (server.data_dir / "reports/O4/S230602y_dir").exists()
