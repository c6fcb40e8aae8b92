"""The listings of the report tree through the shipped front ends, run for
real (Debian's nginx and Apache): a report's directory is its own
``index.html`` where it has one (served by the front end) and the app's
listing from the database where it has none, an event's directory is the
app's listing, and each answer carries the report tree's headers exactly
once.  The listings themselves: tests/test_listings.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests

from dqrxfer.server.untrusted import REPORT_HEADERS
from support.deployment import deployed
from support.kerberos import USER, Realm
from support.live import LiveServer
from support.proxies import behind_nginx, needs_apache, needs_nginx
from support.tus import send, tar_metadata


@pytest.fixture
def data_dir(front_end_data_dir: Path) -> Path:
    """The server's data directory where the front end's workers can read it."""
    return front_end_data_dir


EVENT = "reports/O4/S230518h_dir"
LISTED = f"{EVENT}/S230518h_llo_1"  #: no index.html
OWN_PAGE = f"{EVENT}/S230518h_lho_1"  #: has one
FILES = {"data.json": b'{"a": 1}', "notes.txt": b"n" * 2048}


def upload(backend: str, session: requests.Session) -> None:
    """Two reports through the app's tus endpoint (straight to the backend)."""
    for name, body in FILES.items():
        metadata = tar_metadata(filename=name, kind="file")
        assert send(backend, body, metadata, session=session).final.status_code == 204
    metadata = tar_metadata(filename="index.html", kind="file", uploader="lho")
    assert send(backend, b"<h1>lho</h1>", metadata, session=session).final.status_code == 204


def readable_by_the_front_end(reports: Path) -> None:
    """The front end's workers (www-data under root) walk down to the reports,
    which live in a temporary directory of their own."""
    for path in [reports, *reports.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    for directory in reports.parents:
        if directory.stat().st_mode & 0o001 == 0:
            directory.chmod(directory.stat().st_mode | 0o011)


def get(url: str) -> requests.Response:
    response = requests.get(url, timeout=30)
    for name, value in REPORT_HEADERS.items():
        # Twice would be "*, *": a browser refuses that Access-Control-Allow-Origin.
        assert response.headers.get(name) == value, (url, response.status_code, name)
    return response


def check_listings(base: str, app: LiveServer) -> None:
    listed = get(f"{base}/{LISTED}/")
    assert listed.status_code == 200, listed.text
    assert "this report has no <code>index.html</code>" in listed.text
    for name, body in FILES.items():
        assert f'<a href="{name}">{name}</a>' in listed.text
        assert hashlib.sha256(body).hexdigest() in listed.text
    assert "2.0 KiB" in listed.text
    # A file of the listing is served by the front end, as before.
    assert get(f"{base}/{LISTED}/notes.txt").content == FILES["notes.txt"]
    own = get(f"{base}/{OWN_PAGE}/")
    assert own.status_code == 200 and own.text == "<h1>lho</h1>"
    event = get(f"{base}/{EVENT}/")
    assert event.status_code == 200
    for report in ("S230518h_lho_1", "S230518h_llo_1"):
        assert f'<a href="{report}/">{report}/</a>' in event.text
    # Without the slash: redirected to the listing.
    assert requests.get(f"{base}/{EVENT}", timeout=30).url == f"{base}/{EVENT}/"
    # A report the database does not know is the app's 404, marked too.
    assert get(f"{base}/{EVENT}/S230518h_virgo_1/").status_code == 404
    # The front end served the files and the report's own page; the app the listings.
    log = app.log()
    assert f"GET /{LISTED}/ HTTP" in log and f"GET /{EVENT}/ HTTP" in log, log[-3000:]
    assert f"GET /{OWN_PAGE}/ HTTP" not in log and "notes.txt HTTP" not in log, log[-3000:]


@needs_nginx
def test_nginx_passes_directories_without_index_to_the_app(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with behind_nginx(data_dir, tmp_path, start=False) as (server, nginx):
        upload(server.url, requests.Session())
        readable_by_the_front_end(data_dir / "reports")
        nginx.start()
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(nginx.cert))
        check_listings(nginx.url, server)


@needs_apache
def test_apache_passes_directories_without_index_to_the_app(
    kerberos: Realm, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with deployed(kerberos, data_dir) as deployment:
        # The app believes the principal Apache would pass from 127.0.0.1.
        session = requests.Session()
        session.headers["X-Remote-User"] = USER
        upload(deployment.server.url, session)
        readable_by_the_front_end(data_dir / "reports")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(deployment.apache.cert))
        check_listings(deployment.url, deployment.server)
