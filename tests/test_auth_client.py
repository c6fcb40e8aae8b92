"""``dqrxfer.auth`` against a real KDC and a real server: credentials checked up
front, the session cookie, and the body-resend trap of HTTP Negotiate (a 401
answered by resending a spent body)."""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dqrxfer.auth import SessionExpired, login, make_auth
from dqrxfer.errors import AuthenticationError
from support import tusclient
from support.kerberos import LLO_ROBOT, SERVICE, USER, Realm
from support.live import LiveServer

pytestmark = pytest.mark.kerberos

#: Everyone in the realm, robots too, may upload anywhere.
RULES = '[[auth.rules]]\nprincipals = ["*@KRBTEST.COM", "dqr/robot/*.llo.example@KRBTEST.COM"]\n'


@pytest.fixture(scope="module")
def server(kerberos: Realm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = kerberos.gssapi_server(tmp_path_factory.mktemp("client-auth"), rules=RULES)
    yield live
    live.discard()


def user_session(kerberos: Realm) -> requests.Session:
    session = requests.Session()
    session.auth = make_auth(ccache=kerberos.user_ccache, service=SERVICE)
    return session


def spoil_cookie(session: requests.Session) -> None:
    """Make the session's cookie one the server refuses (a bad signature)."""
    spoiled = 0
    for cookie in session.cookies:
        if cookie.name == "dqrxfer_session":
            cookie.value = cookie.value[:-6] + (
                "AAAAAA" if cookie.value[-6:] != "AAAAAA" else "BBBBBB"
            )
            spoiled += 1
    assert spoiled == 1


class Restartable:
    """A body that gives the same bytes each time it is iterated (like the
    transport's slice bodies), with a length."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.iterations = 0

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[bytes]:
        self.iterations += 1
        for start in range(0, len(self.data), 4096):
            yield self.data[start : start + 4096]


def new_upload(session: requests.Session, server: LiveServer, length: int, revision: str) -> str:
    created = tusclient.create(session, server.url, length, revision=revision, project="personal")
    assert created.status_code == 201, created.text
    return created.headers["Location"]


def test_login_gets_a_cookie_and_later_requests_use_it(kerberos: Realm, server: LiveServer) -> None:
    session = user_session(kerberos)
    assert login(session, server.url)["principal"] == USER
    assert session.cookies.get("dqrxfer_session")
    response = session.get(f"{server.url}/api/v1/ping", timeout=10)
    assert "Authorization" not in response.request.headers


@pytest.mark.parametrize(
    "make_body",
    [
        pytest.param(
            lambda data: (data[i : i + 4096] for i in range(0, len(data), 4096)), id="generator"
        ),
        pytest.param(lambda data: io.BytesIO(data), id="file"),
    ],
)
def test_a_spent_body_is_never_resent_after_a_401(
    kerberos: Realm, server: LiveServer, make_body
) -> None:
    session = user_session(kerberos)
    data = os.urandom(200 * 1024)
    url = new_upload(session, server, len(data), "11")
    spoil_cookie(session)
    with pytest.raises(SessionExpired, match="not resent"):
        tusclient.patch(session, url, 0, make_body(data))
    # Nothing half-sent was stored, and a fresh request authenticates afresh.
    assert tusclient.head(session, url).headers["Upload-Offset"] == "0"
    done = tusclient.patch(session, url, 0, make_body(data))
    assert done.status_code == 204 and done.headers["Upload-Offset"] == str(len(data))
    assert "Authorization" not in done.request.headers  # the HEAD renewed the cookie


def test_a_restartable_body_is_resent_whole_after_a_401(
    kerberos: Realm, server: LiveServer
) -> None:
    session = user_session(kerberos)
    data = os.urandom(300 * 1024 + 5)
    url = new_upload(session, server, len(data), "12")
    spoil_cookie(session)
    body = Restartable(data)
    done = tusclient.patch(session, url, 0, body)
    assert done.status_code == 204 and done.headers["Upload-Offset"] == str(len(data))
    assert body.iterations == 2 and done.history[0].status_code == 401
    upload_id = tusclient.upload_id(url)
    record = session.get(f"{server.url}/api/v1/uploads/{upload_id}", timeout=10).json()
    assert record["state"] == "published"
    landed = server.data_dir / "reports/personal/S230518h_dir/S230518h_llo_12/data.json"
    assert landed.read_bytes() == data


def test_no_ticket_fails_with_the_klist_message_when_asked(
    kerberos: Realm, server: LiveServer, tmp_path: Path
) -> None:
    session = requests.Session()
    session.auth = make_auth(ccache=tmp_path / "missing", service=SERVICE)  # checked, kept
    with pytest.raises(AuthenticationError) as error:
        login(session, server.url)
    message = str(error.value)
    assert f"klist: No credentials cache found (filename: {tmp_path / 'missing'})" in message
    assert "kinit" in message and "--keytab" in message


def test_no_ticket_is_fine_for_a_server_without_authentication(
    live_server: LiveServer, tmp_path: Path
) -> None:
    session = requests.Session()
    session.auth = make_auth(ccache=tmp_path / "missing")
    assert login(session, live_server.url)["principal"] is None


def test_an_expired_ticket_says_so(kerberos: Realm, tmp_path: Path) -> None:
    ccache = tmp_path / "short.ccache"
    kerberos.kinit(USER, ccache, lifetime="2s")
    kerberos.wait_expired(ccache)
    with pytest.raises(AuthenticationError, match=f"Kerberos ticket in {ccache} has expired"):
        make_auth(ccache=ccache, required=True)


def test_robot_keytab_and_unusable_keytabs(
    kerberos: Realm, server: LiveServer, tmp_path: Path
) -> None:
    session = requests.Session()
    session.auth = make_auth(keytab=kerberos.llo_robot_keytab, service=SERVICE)
    assert login(session, server.url)["principal"] == LLO_ROBOT
    with pytest.raises(AuthenticationError, match="not a readable file"):
        make_auth(keytab=tmp_path / "missing.keytab")
    garbage = tmp_path / "garbage.keytab"
    garbage.write_bytes(b"\x05\x02not a keytab")
    with pytest.raises(AuthenticationError, match="cannot get a Kerberos ticket from keytab"):
        make_auth(keytab=garbage)


def test_a_wrong_service_name_is_explained(kerberos: Realm, server: LiveServer) -> None:
    session = requests.Session()
    session.auth = make_auth(
        ccache=kerberos.user_ccache, service="HTTP/nowhere.example@KRBTEST.COM"
    )
    with pytest.raises(AuthenticationError, match="cannot get a Kerberos service ticket"):
        login(session, server.url)


def test_tokens_never_reach_the_log(
    kerberos: Realm, server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    session = user_session(kerberos)
    response = session.get(f"{server.url}/api/v1/ping", timeout=10)
    token = response.request.headers["Authorization"].split()[1]
    spoil_cookie(session)
    session.get(f"{server.url}/api/v1/ping", timeout=10).raise_for_status()  # 401, then retried
    reply = base64.b64decode(response.headers["WWW-Authenticate"].split()[1])
    assert "Authenticate header: <redacted>" in caplog.text  # logged, without the token
    assert token[:32] not in caplog.text
    assert repr(reply)[2:30] not in caplog.text
