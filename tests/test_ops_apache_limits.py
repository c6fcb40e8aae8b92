"""Apache's LimitRequestBody against uploads, with Debian's Apache and the
shipped virtual host (ops/apache/dqrxfer.conf) in front of gunicorn.

What is checked, and why: the size limit of an upload is the app's own
(``max_upload_size``, ``Tus-Max-Size``), and one PATCH may carry more than
Apache's default LimitRequestBody of 1 GiB (since 2.4.54).  Apache 2.4 does not
apply LimitRequestBody to request bodies that mod_proxy forwards (its HTTP input
filter sets no limit for a proxied request); httpd's development branch does,
which is why the shipped file sets ``LimitRequestBody 0`` on ``/files/``.  Each
test also sends a request Apache answers itself, so that a pass cannot come from
a limit that was never in force.

If a test here fails on a newer Apache, the proxied case changed: the comment in
ops/apache/dqrxfer.conf and docs/operators/frontends.md must then say so.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dqrxfer.auth import login
from support.deployment import NEEDS_APACHE, Deployment, deployed
from support.kerberos import Realm
from support.tusclient import TUS, create

pytestmark = NEEDS_APACHE

MiB = 1024 * 1024
GiB = 1024 * MiB
#: Apache's LimitRequestBody default since 2.4.54.
APACHE_DEFAULT_LIMIT = GiB
#: The shipped file's lifting of the limit for uploads, taken out to see what
#: Apache does without it.
SHIPPED_LIFT = '    <Location "/files/">\n        LimitRequestBody 0\n    </Location>\n'
WITHOUT_LIFT = {SHIPPED_LIFT: ""}


class ZeroBody:
    """``size`` zero bytes as a streamed request body with a Content-Length:
    never more than one block in memory, however large."""

    BLOCK = bytes(MiB)

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent = 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        left = self.size
        while left:
            piece = self.BLOCK if left >= MiB else self.BLOCK[:left]
            self.sent += len(piece)
            left -= len(piece)
            yield piece


def answered_by_apache(deployment: Deployment, length: int) -> int:
    """Status of a POST Apache handles itself (a report file, outside the
    proxy) announcing ``length`` body bytes; only the headers are sent, so only
    a limit checked against Content-Length answers at once."""
    reports = deployment.server.data_dir / "reports" / "O4"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "probe.txt").write_text("probe\n")
    context = ssl.create_default_context(cafile=str(deployment.apache.cert))
    connection = http.client.HTTPSConnection(
        "localhost", deployment.apache.port, context=context, timeout=30
    )
    try:
        connection.putrequest("POST", "/reports/O4/probe.txt")
        connection.putheader("Content-Length", str(length))
        connection.putheader("Content-Type", "application/octet-stream")
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def patch_through_apache(deployment: Deployment, length: int, body: int) -> requests.Response:
    """Create an upload of ``length`` bytes as the LLO robot, then send ``body``
    bytes of it in one PATCH through Apache."""
    session = deployment.session(keytab=deployment.realm.llo_robot_keytab)
    login(session, deployment.url)
    created = create(session, deployment.url, length, filename="big.bin")
    assert created.status_code == 201, created.text
    return session.patch(
        created.headers["Location"],
        headers={
            **TUS,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        data=ZeroBody(body),
        timeout=600,
    )


@pytest.mark.parametrize("site", ["shipped", "without the /files/ lift"])
def test_a_server_wide_limit_does_not_cut_a_proxied_patch(
    kerberos: Realm, data_dir: Path, monkeypatch: pytest.MonkeyPatch, site: str
) -> None:
    """A server-wide LimitRequestBody of 1 MiB (as a site's main configuration
    might have) and a 4 MiB PATCH: Apache refuses the size for a request it
    answers itself, and lets the PATCH through to the app."""
    replacements = WITHOUT_LIFT if site != "shipped" else {}
    with deployed(
        kerberos,
        data_dir,
        apache_config=[f"LimitRequestBody {MiB}"],
        site_replacements=replacements,
    ) as deployment:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(deployment.apache.cert))
        assert answered_by_apache(deployment, 4 * MiB) == 413
        answer = patch_through_apache(deployment, 4 * MiB, 4 * MiB)
        assert answer.status_code == 204, (
            f"{answer.status_code} {answer.text[:300]}: this Apache applies LimitRequestBody "
            "to proxied request bodies"
        )
        assert int(answer.headers["Upload-Offset"]) == 4 * MiB


def test_the_default_limit_does_not_cut_a_proxied_patch_over_1_gib(
    kerberos: Realm, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No LimitRequestBody anywhere (Apache's default, 1 GiB) and the shipped
    lift taken out: a single PATCH of 1 GiB + 1 MiB, streamed, reaches the app
    whole, while Apache itself refuses a request one byte over its default."""
    with deployed(kerberos, data_dir, site_replacements=WITHOUT_LIFT) as deployment:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(deployment.apache.cert))
        assert answered_by_apache(deployment, APACHE_DEFAULT_LIMIT + 1) == 413
        body = APACHE_DEFAULT_LIMIT + MiB
        # One MiB short of the whole upload: it stays unfinished (no 1 GiB
        # report published), and is terminated below to give the disk back.
        answer = patch_through_apache(deployment, body + MiB, body)
        assert answer.status_code == 204, (
            f"{answer.status_code} {answer.text[:300]}: this Apache applies its default "
            "LimitRequestBody to proxied request bodies"
        )
        assert int(answer.headers["Upload-Offset"]) == body
        session = deployment.session(keytab=deployment.realm.llo_robot_keytab)
        deleted = session.delete(answer.url, headers=TUS, timeout=60)
        assert deleted.status_code == 204
