"""How many slow uploads the shipped Apache virtual host lets through at once
(ops/apache/dqrxfer.conf, "how many requests at once"), with Debian's Apache
in front of gunicorn (ops/gunicorn.conf.py).

Apache holds a thread for every request it proxies, for as long as the request
lasts; Debian's mpm_event.conf allows 150 at once.  Here Debian's values are
in the main configuration, before the shipped file, as apache2.conf has them,
and 200 uploads (more than those 150) trickle their PATCH bodies through
Apache at a few kB/s.  The test waits until the app has all 200 bodies
streaming at once (its ``dqrxfer_tus_uploads_open`` gauge), which under
Debian's limit could never happen, then asks for a ping and a links lookup
through Apache, and finally lets every body end: each answers 204 with all its
bytes.

Why 200 and not the 1,536 the file allows: 1,536 TLS connections and threads
on a small CI machine cost more than the claim needs.  Past 150 is what shows
that the shipped values replace Debian's, and the ping beside them that Apache
still has threads for other requests.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from dqrxfer.auth import login
from support.deployment import NEEDS_APACHE, Deployment, deployed
from support.kerberos import LLO_ROBOT, Realm
from support.live import LiveServer
from support.seed import Seed, seed
from support.tus import wait_for
from support.tusclient import TUS, create

pytestmark = NEEDS_APACHE

#: Debian's /etc/apache2/mods-available/mpm_event.conf.
DEBIAN_MPM_EVENT = [
    "StartServers 2",
    "MinSpareThreads 25",
    "MaxSpareThreads 75",
    "ThreadLimit 64",
    "ThreadsPerChild 25",
    "MaxRequestWorkers 150",
    "MaxConnectionsPerChild 0",
]
SLOW_UPLOADS = 200
BODY = 512 * 1024  #: each PATCH's body; the upload is twice as long (stays unfinished)
PIECE = 2048  #: sent every half second while held: 4 kB/s
TICK = 0.5


def uploads_open(server: LiveServer) -> int:
    """Request bodies streaming into the app right now (its ``/metrics``)."""
    text = requests.get(f"{server.url}/metrics", timeout=60).text
    found = re.search(r"^dqrxfer_tus_uploads_open (\S+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


class SlowPatch:
    """A PATCH through Apache over TLS, its body sent by hand."""

    def __init__(self, deployment: Deployment, location: str, cookie: str) -> None:
        context = ssl.create_default_context(cafile=str(deployment.apache.cert))
        raw = socket.create_connection(("127.0.0.1", deployment.apache.port), timeout=120)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        head = "\r\n".join(
            [
                f"PATCH {urlsplit(location).path} HTTP/1.1",
                f"Host: localhost:{deployment.apache.port}",
                "Tus-Resumable: 1.0.0",
                "Content-Type: application/offset+octet-stream",
                "Upload-Offset: 0",
                f"Content-Length: {BODY}",
                f"Cookie: dqrxfer_session={cookie}",
            ]
        )
        self.sock.sendall(f"{head}\r\n\r\n".encode())
        self.sent = 0

    def send(self, size: int) -> None:
        size = min(size, BODY - self.sent)
        self.sock.sendall(b"s" * size)
        self.sent += size

    def finish(self) -> None:
        self.send(BODY - self.sent)

    def response(self) -> tuple[int, dict[str, str]]:
        reader = self.sock.makefile("rb")
        status = int(reader.readline().split()[1])
        headers: dict[str, str] = {}
        while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        return status, headers

    def close(self) -> None:
        self.sock.close()


def trickle(uploads: list[SlowPatch], release: threading.Event) -> None:
    """A piece for each upload every TICK (the pace of a slow link, not a
    wait for anything) until ``release``; never the last byte of a body.
    ``uploads`` grows while this runs: a copy is walked."""
    while not release.is_set():
        for upload in list(uploads):
            if upload.sent + PIECE < BODY:
                upload.send(PIECE)
        release.wait(TICK)


@pytest.fixture
def deployment(
    kerberos: Realm, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    with deployed(kerberos, data_dir, apache_config=DEBIAN_MPM_EVENT) as running:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(running.apache.cert))
        seed(f"sqlite:///{data_dir / 'dqrxfer.sqlite'}", [Seed("S230518h", "llo", 1)])
        yield running


def test_more_slow_uploads_than_debians_150_pass_apache_and_a_ping_still_answers(
    deployment: Deployment,
) -> None:
    session = deployment.session(keytab=deployment.realm.llo_robot_keytab)
    login(session, deployment.url)
    cookie = session.cookies["dqrxfer_session"]
    locations = []
    for index in range(SLOW_UPLOADS):
        created = create(
            session,
            deployment.url,
            2 * BODY,
            revision=str(10 + index),
            filename=f"slow-{index}.bin",
        )
        assert created.status_code == 201, created.text
        locations.append(created.headers["Location"])

    uploads: list[SlowPatch] = []
    release = threading.Event()
    pacer = threading.Thread(target=trickle, args=(uploads, release), daemon=True)
    try:
        # Paced from the first connection on: Apache cuts a body that sends
        # nothing for 60 s (RequestReadTimeout), however long the others take.
        pacer.start()
        for location in locations:
            uploads.append(SlowPatch(deployment, location, cookie))
        # Every body streams into the app at once: Apache holds 200 requests.
        wait_for(
            lambda: uploads_open(deployment.server) >= SLOW_UPLOADS,
            timeout=120,
            what=f"{SLOW_UPLOADS} bodies streaming through Apache at once",
        )

        # On a new connection, as a site's dqr-ping or a browser that was
        # not connected yet: Apache gives it to a process with a thread free.
        # (A keep-alive connection stays with its Apache process, and waits
        # while slow uploads hold every thread of that process: see the
        # shipped file's comment.)
        pinger = deployment.session(keytab=deployment.realm.llo_robot_keytab)
        ping = pinger.get(f"{deployment.url}/api/v1/ping", timeout=60)
        assert ping.status_code == 200, ping.text
        assert ping.json()["principal"] == LLO_ROBOT
        links = requests.get(f"{deployment.url}/api/v1/events/S230518h/reports", timeout=60)
        assert links.status_code == 200, links.text
        assert [report["site"] for report in links.json()["reports"]] == ["llo"]
        assert uploads_open(deployment.server) >= SLOW_UPLOADS  # still all in flight

        release.set()
        pacer.join(timeout=60)
        assert not pacer.is_alive()
        for upload in uploads:
            upload.finish()
        for upload in uploads:
            status, headers = upload.response()
            assert status == 204, status
            assert int(headers["upload-offset"]) == BODY
    finally:
        release.set()
        for upload in uploads:
            upload.close()
    # The session's connection has been idle through the slow uploads, longer
    # than Apache keeps an idle connection open (KeepAliveTimeout): a request
    # on it may cross Apache's close.  New connections for the checks.
    session.close()
    # Now that the uploads have ended, Apache has far more idle threads than
    # MaxSpareThreads and quiesces one process a second; a process that
    # quiesces closes its idle keep-alive connections, so a HEAD sent on one
    # can meet the close ("Remote end closed connection without response").
    # A browser, and dqr-upload, send such an idempotent request again on a
    # new connection; so does this check.
    session.mount("https://", HTTPAdapter(max_retries=Retry(total=3, allowed_methods={"HEAD"})))
    offsets = {
        int(session.head(location, headers=TUS, timeout=60).headers["Upload-Offset"])
        for location in locations
    }
    assert offsets == {BODY}
