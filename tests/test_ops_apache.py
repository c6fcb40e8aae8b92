"""The deployment, end to end: Debian's Apache with ops/apache/dqrxfer.conf
(TLS, mod_auth_gssapi with the service keytab and sessions, the streaming
proxy) in front of gunicorn (``serve --auth remote-user --trusted-proxy
127.0.0.1`` with ops/gunicorn.conf.py), a real KDC (k5test), and real
Kerberos clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from dqrxfer.auth import login
from support.cli import run_cli
from support.deployment import NEEDS_APACHE, Deployment, deployed
from support.kerberos import LLO_ROBOT, USER, Realm
from support.tus import dqr_upload_command, random_file, sha256_hex
from support.tusclient import TUS, create, head, upload_id


@pytest.fixture
def data_dir(front_end_data_dir: Path) -> Path:
    """The server's data directory where the front end's workers can read it."""
    return front_end_data_dir


pytestmark = NEEDS_APACHE

MiB = 1024 * 1024


@pytest.fixture
def deployment(
    kerberos: Realm, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    with deployed(kerberos, data_dir) as running:
        # requests prefers REQUESTS_CA_BUNDLE over a session's own ``verify``.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(running.apache.cert))
        yield running


def test_ping_through_apache_names_the_principal(deployment: Deployment) -> None:
    session = deployment.session(ccache=deployment.realm.user_ccache)
    answer = login(session, deployment.apache.url)
    assert answer["principal"] == USER
    # mod_auth_gssapi's session cookie, under the name the client knows: the
    # next request carries no new token, and needs none.
    assert "dqrxfer_session" in session.cookies
    quiet = session.get(f"{deployment.apache.url}/api/v1/ping", timeout=30)
    assert quiet.status_code == 200 and "Authorization" not in quiet.request.headers
    session.auth = None
    again = session.get(f"{deployment.apache.url}/api/v1/ping", timeout=30)
    assert again.status_code == 200 and again.json()["principal"] == USER


def test_no_ticket_is_challenged_and_a_forged_header_is_ignored(deployment: Deployment) -> None:
    url = f"{deployment.apache.url}/api/v1/ping"
    cert = str(deployment.apache.cert)
    bare = requests.get(url, headers={"X-Remote-User": USER}, verify=cert, timeout=30)
    assert bare.status_code == 401
    assert bare.headers["WWW-Authenticate"].startswith("Negotiate")
    # With a robot's ticket, a header naming someone else changes nothing.
    session = deployment.session(keytab=deployment.realm.llo_robot_keytab)
    answer = session.get(url, headers={"X-Remote-User": USER}, timeout=30)
    assert answer.status_code == 200 and answer.json()["principal"] == LLO_ROBOT
    # (Straight to gunicorn from 127.0.0.1 the header *is* believed: the proxy's
    # address is trusted. docs/operators/kerberos.md says how to keep other
    # local users away from the app's port.)


def test_200_mib_upload_through_apache(deployment: Deployment, tmp_path: Path) -> None:
    payload = tmp_path / "report.bin"
    digest = random_file(payload, 200)
    size = payload.stat().st_size

    session = deployment.session(keytab=deployment.realm.llo_robot_keytab)
    url = deployment.apache.url
    login(session, url)
    created = create(session, url, size, filename="report.bin", sha256=digest)
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert location.startswith(f"{url}/files/")

    chunk = 32 * MiB
    offset = 0
    with open(payload, "rb") as handle:
        while offset < size:
            block = handle.read(chunk)
            response = session.patch(
                location,
                headers={
                    **TUS,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                },
                data=block,
                timeout=300,
            )
            assert response.status_code == 204, response.text
            offset = int(response.headers["Upload-Offset"])
    assert offset == size
    assert int(head(session, location).headers["Upload-Offset"]) == size

    landed = deployment.server.data_dir / "reports/O4/S230518h_dir/S230518h_llo_1/report.bin"
    assert landed.stat().st_size == size
    assert sha256_hex(landed) == digest

    # The server recorded the robot as the uploader, and shows the upload to it alone.
    record = session.get(f"{url}/api/v1/uploads/{upload_id(location)}", timeout=30)
    assert record.status_code == 200 and record.json()["state"] == "published"
    engine = create_engine(f"sqlite:///{deployment.server.data_dir / 'dqrxfer.sqlite'}")
    from dqrxfer.server.db import ReportFile

    with Session(engine) as db:
        row = db.scalars(select(ReportFile)).one()
        assert row.principal == LLO_ROBOT
    engine.dispose()
    other = deployment.session(ccache=deployment.realm.user_ccache)
    hidden = other.get(f"{url}/api/v1/uploads/{upload_id(location)}", timeout=30)
    assert hidden.status_code == 404


def test_the_commands_through_apache(deployment: Deployment, tmp_path: Path) -> None:
    """What a site runs: dqr-ping with a user's ticket, then a 200 MiB
    dqr-upload with a robot's keytab, both through Apache."""
    realm = deployment.realm
    url = deployment.apache.url
    ca = {"REQUESTS_CA_BUNDLE": str(deployment.apache.cert)}

    pinged = run_cli(
        "dqr-ping", "-v", "-s", url, "-n", "2", env=realm.client_env(realm.user_ccache, **ca)
    )
    assert pinged.returncode == 0, pinged.stderr
    assert pinged.stdout.split() == ["OK", "OK"]
    assert f"as {USER}" in pinged.stderr and "Success = 100.0%" in pinged.stderr

    payload = tmp_path / "tier1.bin"
    digest = random_file(payload, 200)
    uploaded = run_cli(
        *dqr_upload_command(url, "--keytab", str(realm.llo_robot_keytab), str(payload), revision=2),
        env=realm.client_env(**ca),
        timeout=900,
    )
    assert uploaded.returncode == 0, uploaded.stderr
    landed = deployment.server.data_dir / "reports/O4/S230518h_dir/S230518h_llo_2/tier1.bin"
    assert sha256_hex(landed) == digest

    engine = create_engine(f"sqlite:///{deployment.server.data_dir / 'dqrxfer.sqlite'}")
    from dqrxfer.server.db import ReportFile

    with Session(engine) as db:
        row = db.scalars(select(ReportFile).where(ReportFile.relpath == "tier1.bin")).one()
        assert row.principal == LLO_ROBOT
    engine.dispose()


def test_reports_are_served_but_never_dot_names(deployment: Deployment) -> None:
    reports = deployment.server.data_dir / "reports/O4"
    page = reports / "S230518h_dir/S230518h_llo_1/index.html"
    staged = reports / ".dqrxfer-staging/work/abc.123/extract/index.html"
    swap = reports / "S230518h_dir/.S230518h_llo_1.swap/index.html"
    for path in (page, staged, swap):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("<html></html>")
        # Readable by Apache whatever the modes the server gave them: only the
        # front end's rule keeps dot names out.
        for part in (path, *path.relative_to(reports).parents):
            (reports / part).chmod(0o644 if part == path.relative_to(reports) else 0o755)
    # Apache's workers (www-data) must be able to walk down to the reports,
    # which live in a temporary directory of their own.
    for directory in (reports, *reports.parents):
        mode = directory.stat().st_mode
        if mode & 0o001 == 0:
            directory.chmod(mode | 0o011)
    cert = str(deployment.apache.cert)
    base = f"{deployment.apache.url}/reports/O4"
    served = requests.get(f"{base}/S230518h_dir/S230518h_llo_1/index.html", verify=cert, timeout=30)
    assert served.status_code == 200, deployment.apache.error_log()[-2000:]
    assert served.text == "<html></html>"
    for path in (
        ".dqrxfer-staging/work/abc.123/extract/index.html",
        ".dqrxfer-staging/",
        "S230518h_dir/.S230518h_llo_1.swap/index.html",
    ):
        hidden = requests.get(f"{base}/{path}", verify=cert, timeout=30)
        assert hidden.status_code == 403, path
