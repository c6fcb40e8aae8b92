"""The report tree served as untrusted content, at the HTTP level: every
answer under ``/reports/`` (200, 404, 403, 405) carries the sandbox, nosniff
and the public CORS grant, from the app's embedded route and from the shipped
nginx and Apache front ends; an opaque origin (``Origin: null``, a sandboxed
report page) gets the public reads and the static assets, never ``/files/`` or
an upload's record.  The app's own answers are checked in process
(support.inprocess).  The browser's side: tests/test_reports_untrusted_browser.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from dqrxfer.server.untrusted import REPORT_HEADERS
from support.deployment import deployed
from support.inprocess import InProcessServer, in_process_server
from support.kerberos import Realm
from support.proxies import behind_nginx, needs_apache, needs_nginx
from support.tus import TUS, encode_metadata, send, tar_metadata

NULL = {"Origin": "null"}
REPORT = "reports/O4/S230518h_dir/S230518h_llo_1"


def get(url: str, **kwargs: object) -> requests.Response:
    return requests.get(url, timeout=30, **kwargs)  # type: ignore[arg-type]


def options(url: str, **kwargs: object) -> requests.Response:
    return requests.options(url, timeout=30, **kwargs)  # type: ignore[arg-type]


def assert_untrusted(response: requests.Response, what: str) -> None:
    for name, value in REPORT_HEADERS.items():
        assert response.headers.get(name) == value, (what, response.status_code, name)
    assert "allow-same-origin" not in response.headers["Content-Security-Policy"]
    assert "Access-Control-Allow-Credentials" not in response.headers, what


def check_report_answers(base: str) -> None:
    """One report's answers through ``base``: each status a browser may see."""
    answers = {
        "page": (f"{base}/{REPORT}/index.html", 200),
        "directory": (f"{base}/{REPORT}/", 200),
        "text": (f"{base}/{REPORT}/notes.txt", 200),
        "missing file": (f"{base}/{REPORT}/nothing.html", 404),
        "unknown project": (f"{base}/reports/nope/x.html", 404),
        "dot name": (f"{base}/reports/O4/.dqrxfer-staging/x.html", None),
    }
    for what, (url, status) in answers.items():
        response = get(url)
        if status is not None:
            assert response.status_code == status, (what, response.status_code)
        else:  # the app answers 404, the front ends 403: refused either way
            assert response.status_code in (403, 404), (what, response.status_code)
        assert_untrusted(response, what)
    text = get(f"{base}/{REPORT}/notes.txt")
    assert text.headers["Content-Type"].startswith("text/plain") and "<script>" in text.text


def check_origin_null(base: str) -> None:
    """What a sandboxed page (``Origin: null``) may read through ``base``."""
    links = get(f"{base}/api/v1/events/S230518h/reports", headers=NULL)
    assert links.status_code == 200 and links.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in links.headers
    helper = get(f"{base}/static/dqrxfer.js", headers=NULL)
    assert helper.status_code == 200 and helper.headers["Access-Control-Allow-Origin"] == "*"
    preflight = options(
        f"{base}/files/",
        headers={
            **NULL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "tus-resumable, upload-length, upload-metadata",
        },
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers, preflight.headers
    record = get(f"{base}/api/v1/uploads/0123456789abcdef0123456789abcdef", headers=NULL)
    assert record.status_code in (401, 404)
    assert "Access-Control-Allow-Origin" not in record.headers


def put_report_on_disk(reports: Path) -> None:
    """A report as the web server finds it, readable by its workers (www-data
    under root) down from ``/``."""
    report = reports / REPORT.removeprefix("reports/")
    report.mkdir(parents=True, exist_ok=True)
    (report / "index.html").write_text("<h1>llo</h1>")
    (report / "notes.txt").write_text("<script>alert(1)</script>")
    for path in (report / "index.html", report / "notes.txt"):
        path.chmod(0o644)
    for directory in (report, *report.parents):
        if directory.is_relative_to(reports):
            directory.chmod(0o755)
        elif directory.stat().st_mode & 0o001 == 0:
            directory.chmod(directory.stat().st_mode | 0o001)


def test_embedded_route_marks_every_answer(app_server: InProcessServer) -> None:
    for name, body in (("index.html", b"<h1>llo</h1>"), ("notes.txt", b"<script>x</script>")):
        metadata = tar_metadata(filename=name, kind="file")
        assert send(app_server.url, body, metadata).final.status_code == 204
    check_report_answers(app_server.url)
    head = requests.head(f"{app_server.url}/{REPORT}/index.html", timeout=10)
    assert head.status_code == 200
    assert_untrusted(head, "HEAD")
    wrong_method = requests.post(f"{app_server.url}/{REPORT}/index.html", timeout=10)
    assert wrong_method.status_code == 405
    assert_untrusted(wrong_method, "POST")
    # Everything else of the server is not marked as a report.
    for path in ("/events/", "/api/v1/events/S230518h/reports", "/static/dqrxfer.js"):
        other = requests.get(f"{app_server.url}{path}", timeout=10)
        assert "sandbox" not in other.headers.get("Content-Security-Policy", ""), path


def test_origin_null_reads_public_links_but_never_uploads(app_server: InProcessServer) -> None:
    check_origin_null(app_server.url)
    # Even the requests a browser would never send after that preflight
    # (and an existing upload's record) get no grant.
    metadata = encode_metadata(tar_metadata(filename="a.txt", kind="file"))
    created = requests.post(
        f"{app_server.url}/files/",
        headers={**TUS, **NULL, "Upload-Length": "1", "Upload-Metadata": metadata},
        timeout=10,
    )
    assert created.status_code == 201 and "Access-Control-Allow-Origin" not in created.headers
    upload = created.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    head = requests.head(created.headers["Location"], headers={**TUS, **NULL}, timeout=10)
    assert head.status_code == 200 and "Access-Control-Allow-Origin" not in head.headers
    record = get(f"{app_server.url}/api/v1/uploads/{upload}", headers=NULL)
    assert record.status_code == 200 and "Access-Control-Allow-Origin" not in record.headers


@needs_nginx
def test_nginx_front_end_marks_every_report_answer(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with behind_nginx(data_dir, tmp_path) as (_, nginx):
        put_report_on_disk(data_dir / "reports")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(nginx.cert))
        check_report_answers(nginx.url)
        check_origin_null(nginx.url)


@needs_apache
def test_apache_front_end_marks_every_report_answer(
    kerberos: Realm, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with deployed(kerberos, data_dir) as deployment:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(deployment.apache.cert))
        put_report_on_disk(data_dir / "reports")
        check_report_answers(deployment.url)
        check_origin_null(deployment.url)


def test_without_public_read_no_origin_reads_by_default(data_dir: Path) -> None:
    """``public_read = false``: the reads need a principal, and only the
    configured ``cors_origins`` (none here) get CORS answers."""
    config = data_dir.parent / "server.toml"
    config.write_text("auto_upgrade = true\nserve_reports = true\n[auth]\npublic_read = false\n")
    with in_process_server(data_dir, config) as server:
        links = get(f"{server.url}/api/v1/events/S230518h/reports", headers=NULL)
        assert links.status_code == 200 and "Access-Control-Allow-Origin" not in links.headers
