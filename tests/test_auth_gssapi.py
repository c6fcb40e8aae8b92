"""The server in ``gssapi`` mode against a real KDC: SPNEGO with the service
keytab, mutual authentication, session cookies, authorization rules and
upload ownership.  Clients run in this process with explicit credentials."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import gssapi
import pytest
import requests
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from dqrxfer.auth import make_auth
from dqrxfer.errors import AuthenticationError
from dqrxfer.server.db import ReportFile, Upload
from support import tusclient
from support.kerberos import CLOCK_SKEW, LHO_ROBOT, LLO_ROBOT, SERVICE, STRANGER, USER, Realm
from support.live import LiveServer

pytestmark = pytest.mark.kerberos


@pytest.fixture(scope="module")
def server(kerberos: Realm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = kerberos.gssapi_server(tmp_path_factory.mktemp("gssapi"))
    yield live
    live.discard()


def session_for(kerberos: Realm, who: str) -> requests.Session:
    session = requests.Session()
    if who == USER:
        session.auth = make_auth(ccache=kerberos.user_ccache, service=SERVICE, required=True)
    elif who == STRANGER:
        session.auth = make_auth(ccache=kerberos.stranger_ccache, service=SERVICE, required=True)
    elif who == LLO_ROBOT:
        session.auth = make_auth(keytab=kerberos.llo_robot_keytab, service=SERVICE)
    elif who == LHO_ROBOT:
        session.auth = make_auth(keytab=kerberos.lho_robot_keytab, service=SERVICE)
    return session


def test_no_credentials_is_a_401_with_a_negotiate_challenge(server: LiveServer) -> None:
    response = requests.get(f"{server.url}/api/v1/ping", timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Negotiate"
    assert "Kerberos" in response.json()["error"]
    response = tusclient.create(requests.Session(), server.url, 10)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Negotiate"


def test_report_links_stay_public(server: LiveServer) -> None:
    response = requests.get(f"{server.url}/api/v1/events/S230518h/reports", timeout=10)
    assert response.status_code == 200 and response.json()["reports"] == []


def test_user_ticket_mutual_authentication_and_session_cookie(
    kerberos: Realm, server: LiveServer
) -> None:
    session = session_for(kerberos, USER)
    first = session.get(f"{server.url}/api/v1/ping", timeout=10)
    assert first.status_code == 200 and first.json()["principal"] == USER
    token = first.request.headers["Authorization"]
    assert token.startswith("Negotiate ")
    # The server proved itself: its token completed our context.
    assert first.headers["WWW-Authenticate"].startswith("Negotiate ")
    context = next(iter(session.auth.context.values()))
    assert context.complete

    cookie_header = first.headers["Set-Cookie"]
    assert "dqrxfer_session=" in cookie_header
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=540"):
        assert attribute in cookie_header
    cookie = session.cookies.get("dqrxfer_session")
    assert cookie

    # Later requests ride on the cookie: no new handshake.
    second = session.get(f"{server.url}/api/v1/ping", timeout=10)
    assert second.status_code == 200 and second.json()["principal"] == USER
    assert "Authorization" not in second.request.headers
    assert "WWW-Authenticate" not in second.headers

    # Neither the ticket nor the cookie reaches the server's log.
    log = server.log()
    assert "authenticated user@KRBTEST.COM" in log
    assert token.split()[1][:40] not in log
    assert cookie not in log


def test_a_forged_or_foreign_cookie_is_refused_and_cleared(
    kerberos: Realm, server: LiveServer
) -> None:
    session = session_for(kerberos, USER)
    session.get(f"{server.url}/api/v1/ping", timeout=10).raise_for_status()
    genuine = session.cookies.get("dqrxfer_session")
    _payload, signature = genuine.split(".", 1)
    forged_payload = base64.urlsafe_b64encode(b'{"p":"stranger@KRBTEST.COM"}').decode().rstrip("=")
    for value in (f"{forged_payload}.{signature}", genuine[:-4] + "AAAA", "garbage"):
        response = requests.get(
            f"{server.url}/api/v1/ping", cookies={"dqrxfer_session": value}, timeout=10
        )
        assert response.status_code == 401, value
        assert "expired" in response.json()["error"]
        assert response.headers["Set-Cookie"].startswith("dqrxfer_session=;")
        assert "Max-Age=0" in response.headers["Set-Cookie"]


@pytest.mark.parametrize(
    "header",
    [
        "Negotiate " + base64.b64encode(b"\x60\x82not-a-kerberos-token" * 8).decode(),
        "Negotiate !!!not-base64!!!",
        "Negotiate ",
        "Basic dXNlcjpwYXNz",
    ],
)
def test_bad_tokens_are_401_never_500(server: LiveServer, header: str) -> None:
    response = requests.get(
        f"{server.url}/api/v1/ping", headers={"Authorization": header}, timeout=10
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Negotiate"


def test_an_expired_ticket_is_a_401(kerberos: Realm, server: LiveServer, tmp_path: Path) -> None:
    ccache = tmp_path / "short.ccache"
    kerberos.kinit(USER, ccache, lifetime="3s")
    creds = gssapi.Credentials(usage="initiate", store={"ccache": f"FILE:{ccache}"})
    context = gssapi.SecurityContext(
        name=gssapi.Name(SERVICE, gssapi.NameType.kerberos_principal), creds=creds, usage="initiate"
    )
    token = base64.b64encode(context.step()).decode()
    kerberos.wait_expired(ccache)
    # The service ticket inside the token ends with the ticket; the server
    # allows CLOCK_SKEW seconds on top.  Wait until that has passed too.
    deadline = time.time() + CLOCK_SKEW + 1.5
    while time.time() < deadline:
        time.sleep(0.2)
    response = requests.get(
        f"{server.url}/api/v1/ping", headers={"Authorization": f"Negotiate {token}"}, timeout=10
    )
    assert response.status_code == 401
    assert "expired" in response.json()["error"].lower()
    assert "Ticket expired" in server.log()


def test_robot_keytab_authenticates(kerberos: Realm, server: LiveServer) -> None:
    session = session_for(kerberos, LLO_ROBOT)
    response = session.get(f"{server.url}/api/v1/ping", timeout=10)
    assert response.status_code == 200 and response.json()["principal"] == LLO_ROBOT


def test_authorization_rules_name_the_rule(kerberos: Realm, server: LiveServer) -> None:
    stranger = session_for(kerberos, STRANGER)
    refused = tusclient.create(stranger, server.url, 10, project="O4")
    assert refused.status_code == 403
    assert "stranger@KRBTEST.COM may not upload to project O4" in refused.text
    assert "no rule in auth.rules" in refused.text
    # "*@KRBTEST.COM" covers people in project personal.
    assert tusclient.create(stranger, server.url, 10, project="personal").status_code == 201

    robot = session_for(kerberos, LLO_ROBOT)
    refused = tusclient.create(robot, server.url, 10, uploader="lho")
    assert refused.status_code == 403
    assert "as site lho: rule 'llo robot' allows only llo" in refused.text
    # "*@KRBTEST.COM" does not cover robots.
    assert tusclient.create(robot, server.url, 10, project="personal").status_code == 403
    assert tusclient.create(robot, server.url, 10, uploader="LLO").status_code == 201

    other_robot = session_for(kerberos, LHO_ROBOT)
    assert tusclient.create(other_robot, server.url, 10).status_code == 403


def test_only_the_creator_sees_an_upload(kerberos: Realm, server: LiveServer) -> None:
    owner, other = session_for(kerberos, USER), session_for(kerberos, LLO_ROBOT)
    created = tusclient.create(owner, server.url, 8, revision="7")
    assert created.status_code == 201
    url = created.headers["Location"]
    record = f"{server.url}/api/v1/uploads/{tusclient.upload_id(url)}"

    assert tusclient.head(other, url).status_code == 404
    assert tusclient.patch(other, url, 0, b"intruder").status_code == 404
    assert other.get(record, timeout=10).status_code == 404
    assert tusclient.head(owner, url).headers["Upload-Offset"] == "0"

    finished = tusclient.patch(owner, url, 0, b"12345678")
    assert finished.status_code == 204 and finished.headers["Upload-Offset"] == "8"
    assert owner.get(record, timeout=10).json()["state"] == "published"

    engine = create_engine(f"sqlite:///{server.data_dir / 'dqrxfer.sqlite'}")
    with Session(engine) as db:
        row = db.scalars(select(Upload).where(Upload.id == tusclient.upload_id(url))).one()
        assert row.principal == USER
        published = db.scalars(
            select(ReportFile).where(ReportFile.upload_id == tusclient.upload_id(url))
        ).one()
        assert published.principal == USER
    engine.dispose()


def test_make_auth_without_a_ticket_raises_when_required(kerberos: Realm, tmp_path: Path) -> None:
    with pytest.raises(AuthenticationError, match="No credentials cache found"):
        make_auth(ccache=tmp_path / "none", required=True)
