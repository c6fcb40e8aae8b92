"""A hostile report page in a real browser (Debian's headless Chromium).

Any member may publish HTML to the project ``personal``; the server serves it
from ``/reports/`` on the same host as the authenticated API.  Here a stranger
publishes a page that (a) uses the jQuery helper to link the other sites'
reports of its event and loads its own script, image and data, and (b) tries
to act as the member who views it: create an upload on ``/files/``, read the
member's upload record and ping as them, with the member's session cookie in
the browser (the cookie the server issued after a real Kerberos handshake, with
the server's own attributes).

Served as it is (``Content-Security-Policy: sandbox``, opaque origin) the page
renders and links, and every attempt fails; the server's log shows the
cookie never arrived.  The same page with the sandbox header stripped on its
way into the browser succeeds in all three: the test can tell.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
import requests

from dqrxfer.auth import make_auth
from support.browser import require_browser, run_browser
from support.kerberos import SERVICE, STRANGER, USER, Realm
from support.live import LiveServer
from support.tus import encode_metadata, send, tar_metadata, wait_for

pytestmark = [pytest.mark.kerberos, pytest.mark.browser]

GRACEID = "S230518h"
COOKIE = "dqrxfer_session"

#: The hostile page: the helper's links, its own resources, and three attempts
#: to act as the viewer, each marked in the URL with how the page ran.
PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Virgo DQR</title>
<script src="/static/jquery-3.8.0.min.js"></script>
<script src="/static/dqrxfer.js"></script>
<script src="local.js"></script>
</head>
<body>
<h1>Virgo DQR</h1>
<img id="plot" src="plot.svg" alt="plot">
<nav id="links" aria-label="Other reports"></nav>
<script>
window.__render = null;
dqrxfer.renderLinks("#links", "__GRACEID__").then(
  function (reports) { window.__render = {ok: true, count: reports.length}; },
  function (error) { window.__render = {ok: false, message: error.message}; }
);
// Without the helper, as docs/api.md shows: jQuery believes the API on the
// page's own host same-origin and adds X-Requested-With (a preflight).
window.__plain = null;
$.getJSON(location.protocol + "//" + location.host + "/api/v1/events/__GRACEID__/reports").then(
  function (body) { window.__plain = body.reports.length; },
  function (xhr) { window.__plain = "failed: " + xhr.status; }
);
const MARK = window.origin === "null" ? "sandboxed" : "unsandboxed";
async function attempt(url, init) {
  try {
    const options = Object.assign({credentials: "include"}, init);
    const response = await fetch(url + "?from=" + MARK, options);
    return {status: response.status, body: (await response.text()).slice(0, 300)};
  } catch (error) {
    return {blocked: String(error)};
  }
}
Promise.all([
  fetch("data.json").then((r) => r.json(), (e) => ({error: String(e)})),
  attempt("/files/", {method: "POST", headers: {
    "Tus-Resumable": "1.0.0", "Upload-Length": "5", "Upload-Metadata": "__METADATA__"}}),
  attempt("/api/v1/uploads/__UPLOAD__", {}),
  attempt("/api/v1/ping", {}),
]).then(function ([data, create, record, ping]) {
  window.__attack = {data: data, create: create, record: record, ping: ping};
});
</script>
</body>
</html>
"""

SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">'
    b'<rect width="40" height="20"/></svg>'
)

PROBE = """
return {
  origin: window.origin,
  local: window.__local || null,
  render: window.__render,
  plain: window.__plain,
  attack: window.__attack,
  links: [...document.querySelectorAll("#links li.dqrxfer-report")].map(
    (li) => li.dataset.site + li.dataset.revision),
  hrefs: [...document.querySelectorAll("#links a")].map((a) => a.getAttribute("href")),
  image: document.getElementById("plot").naturalWidth,
};
"""


def kerberos_session(ccache: Path) -> requests.Session:
    session = requests.Session()
    session.auth = make_auth(ccache=ccache, service=SERVICE, required=True)
    return session


def browser_cookie(set_cookie: str, host: str) -> dict[str, Any]:
    """The session cookie as the browser keeps it, from the server's own
    ``Set-Cookie`` (name, value and every attribute the server chose)."""
    parsed = SimpleCookie()
    parsed.load(set_cookie)
    morsel = parsed[COOKIE]
    return {
        "name": COOKIE,
        "value": morsel.value,
        "domain": host,
        "path": morsel["path"],
        "httpOnly": bool(morsel["httponly"]),
        "secure": bool(morsel["secure"]),
        "sameSite": morsel["samesite"].capitalize(),
        "expires": int(time.time()) + int(morsel["max-age"]),
    }


@pytest.fixture(scope="module")
def visits(kerberos: Realm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_browser()
    root = tmp_path_factory.mktemp("untrusted")
    server = kerberos.gssapi_server(root)
    try:
        yield visit(server, kerberos, root)
    finally:
        server.stop()


def visit(server: LiveServer, kerberos: Realm, work: Path) -> dict[str, Any]:
    member = kerberos_session(kerberos.user_ccache)
    # The member's own reports of the event (O4) and one upload of theirs.
    uploads = {}
    for site in ("llo", "lho"):
        metadata = tar_metadata(filename="index.html", kind="file", uploader=site)
        sent = send(server.url, f"<h1>{site}</h1>".encode(), metadata, session=member)
        assert sent.final.status_code == 204, sent.final.text
        uploads[site] = sent.upload_id
    # A fresh handshake: the cookie the server issues with it goes into the browser.
    login = kerberos_session(kerberos.user_ccache).get(f"{server.url}/api/v1/ping", timeout=10)
    assert login.json()["principal"] == USER
    cookie = browser_cookie(login.headers["Set-Cookie"], "localhost")

    # The stranger's report page in `personal`, for the same event.
    stranger = kerberos_session(kerberos.stranger_ccache)
    tus_metadata = encode_metadata(
        tar_metadata(filename="evil.html", kind="file", project="personal", revision=9)
    )
    page = (
        PAGE.replace("__GRACEID__", GRACEID)
        .replace("__METADATA__", tus_metadata)
        .replace("__UPLOAD__", uploads["llo"])
    )
    files = {
        "index.html": page.encode(),
        "local.js": b'window.__local = "ran";\n',
        "plot.svg": SVG,
        "data.json": json.dumps({"points": [1, 2, 3]}).encode(),
    }
    for name, body in files.items():
        metadata = tar_metadata(filename=name, kind="file", uploader="virgo", project="personal")
        sent = send(server.url, body, metadata, session=stranger)
        assert sent.final.status_code == 204, sent.final.text

    # localhost, not 127.0.0.1: the cookie's host.
    url = f"http://localhost:{server.port}/reports/personal/{GRACEID}_dir/{GRACEID}_virgo_1/"
    done = (
        "window.__render !== null && window.__plain !== null && window.__attack !== undefined"
        " && document.getElementById('plot').complete"
    )
    spec = {"url": url, "done": done, "probe": PROBE}
    sandboxed, unsandboxed = run_browser(
        [spec, {**spec, "stripHeaders": ["Content-Security-Policy"]}],
        work,
        cookies=[cookie],
    )
    # The unsandboxed page ran last: once its requests are logged, all are.
    record = f"/api/v1/uploads/{uploads['llo']}"
    wait_for(lambda: f"GET {record}?from=unsandboxed" in server.log(), what="the control's log")
    return {
        "sandboxed": sandboxed,
        "unsandboxed": unsandboxed,
        "log": server.log(),
        "record": record,
        "port": server.port,
    }


def seen(visits: dict[str, Any], name: str) -> dict[str, Any]:
    outcome = visits[name]
    assert not outcome["errors"], outcome
    return outcome["probe"]


def logged(visits: dict[str, Any], method: str, path: str, mark: str) -> list[str]:
    """The status codes the server answered to ``method path?from=mark``."""
    pattern = rf'"{method} {re.escape(path)}\?from={mark} HTTP/1\.1" (\d{{3}})'
    return re.findall(pattern, visits["log"])


def test_sandboxed_page_renders_the_links_and_its_own_resources(visits: dict[str, Any]) -> None:
    page = seen(visits, "sandboxed")
    assert page["origin"] == "null"  # the sandbox is on: an opaque origin
    assert page["render"] == {"ok": True, "count": 3}
    assert sorted(page["links"]) == ["lho1", "llo1", "virgo1"]
    assert page["plain"] == 3
    # ... after a preflight (the helper itself sends none).
    preflight = f'"OPTIONS /api/v1/events/{GRACEID}/reports HTTP/1.1" 200'
    assert visits["log"].count(preflight) == 1
    base = f"http://localhost:{visits['port']}/reports/"
    assert sorted(page["hrefs"]) == [
        f"{base}O4/{GRACEID}_dir/{GRACEID}_lho_1/",
        f"{base}O4/{GRACEID}_dir/{GRACEID}_llo_1/",
        f"{base}personal/{GRACEID}_dir/{GRACEID}_virgo_1/",
    ]
    # Its own script, image and data (fetched from the opaque origin).
    assert page["local"] == "ran"
    assert page["image"] == 40
    assert page["attack"]["data"] == {"points": [1, 2, 3]}


def test_sandboxed_page_cannot_act_as_the_member(visits: dict[str, Any]) -> None:
    attack = seen(visits, "sandboxed")["attack"]
    for name in ("create", "record", "ping"):
        assert "blocked" in attack[name], (name, attack[name])
    # The creation never left the browser: its preflight got no CORS grant.
    assert logged(visits, "OPTIONS", "/files/", "sandboxed") == ["204"]
    assert logged(visits, "POST", "/files/", "sandboxed") == []
    # The reads reached the server without the session cookie (SameSite,
    # opaque origin): unauthenticated, and unreadable to the page anyway.
    assert logged(visits, "GET", visits["record"], "sandboxed") == ["401"]
    assert logged(visits, "GET", "/api/v1/ping", "sandboxed") == ["401"]


def test_without_the_sandbox_the_same_page_acts_as_the_member(visits: dict[str, Any]) -> None:
    """The control: the header is what stops the page."""
    page = seen(visits, "unsandboxed")
    assert page["origin"] == f"http://localhost:{visits['port']}"
    attack = page["attack"]
    assert attack["create"]["status"] == 201, attack
    assert attack["record"]["status"] == 200 and '"state"' in attack["record"]["body"]
    assert json.loads(attack["ping"]["body"])["principal"] == USER
    assert logged(visits, "POST", "/files/", "unsandboxed") == ["201"]
    assert STRANGER not in attack["ping"]["body"]
