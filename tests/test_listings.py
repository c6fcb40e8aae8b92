"""Directory listings of the report tree, generated from the database where a
report has no ``index.html`` (and for an event's directory), at the HTTP
level against the app in process: what they list, that every name is
escaped and every link leads to its file, that they carry the report tree's
headers, and that a report's own ``index.html`` still wins.  The same pages
through Apache and nginx: tests/test_ops_listings.py; in a browser:
tests/test_browser_listings.py."""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path

import requests

from dqrxfer.server.untrusted import REPORT_HEADERS
from support.inprocess import InProcessServer, in_process_server
from support.tus import send, tar_metadata

EVENT = "reports/O4/S230518h_dir"
REPORT = f"{EVENT}/S230518h_llo_1"
HOSTILE = '<img src=x onerror="window.pwned=1"> & "a b" #?%.txt'
FILES = {
    ("", "data.json"): b'{"a": 1}',
    ("plots", "strain.png"): b"\x89PNG" + bytes(3000),
    ("", HOSTILE): b"hostile name",
}


def get(url: str, **kwargs: object) -> requests.Response:
    return requests.get(url, timeout=30, **kwargs)  # type: ignore[arg-type]


def upload(server: InProcessServer, files: dict[tuple[str, str], bytes], **where: object) -> None:
    for (subdir, name), body in files.items():
        metadata = tar_metadata(filename=name, kind="file", subdir=subdir, **where)  # type: ignore[arg-type]
        assert send(server.url, body, metadata).final.status_code == 204, name


def rows(page: str) -> list[list[str]]:
    """The table body's cells as text (tags dropped, entities decoded)."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [
        [html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in
         re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]  # fmt: skip


def text(page: str) -> str:
    """What the page says, as one line of text."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def links(page: str) -> list[str]:
    body = page.split("<tbody>", 1)[1]
    return [html.unescape(href) for href in re.findall(r'<a href="([^"]+)"', body)]


def test_report_without_index_lists_its_files_from_the_database(
    app_server: InProcessServer,
) -> None:
    upload(app_server, FILES)
    response = get(f"{app_server.url}/{REPORT}/")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    for name, value in REPORT_HEADERS.items():
        assert response.headers[name] == value, name
    page = response.text
    assert "<title>S230518h_llo_1 (O4) · dqrxfer</title>" in page
    assert "LLO revision 1 of S230518h : this report has no index.html" in text(page)
    assert "(3 files, 3.0 KiB)" in text(page)
    listed = rows(page)
    names = sorted([HOSTILE, "data.json", "plots/strain.png"])
    assert [row[0] for row in listed] == names
    by_name = {row[0]: row for row in listed}
    assert by_name["plots/strain.png"][1] == "2.9 KiB"
    assert by_name["data.json"][1] == "8 B"
    for where, body in FILES.items():
        row = by_name["/".join(filter(None, where))]
        assert row[2] == hashlib.sha256(body).hexdigest()
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", row[3]), row
    # Every name is text, never markup; every link leads to its own file.
    assert "<img" not in page and "&lt;img src=x onerror=" in page
    bodies = {
        f"{subdir}/{name}" if subdir else name: body for (subdir, name), body in FILES.items()
    }
    for row, href in zip(listed, links(page), strict=True):
        assert not set(href) & set('<>" #?'), href
        followed = get(f"{app_server.url}/{REPORT}/{href}")
        assert followed.status_code == 200 and followed.content == bodies[row[0]], href


def test_listing_revalidates_and_changes_with_the_report(app_server: InProcessServer) -> None:
    upload(app_server, {("", "a.txt"): b"a"})
    first = get(f"{app_server.url}/{REPORT}/")
    assert first.headers["Cache-Control"] == "no-cache"
    again = get(f"{app_server.url}/{REPORT}/", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    upload(app_server, {("", "b.txt"): b"b"})
    changed = get(f"{app_server.url}/{REPORT}/", headers={"If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200
    assert [row[0] for row in rows(changed.text)] == ["a.txt", "b.txt"]


def test_report_with_index_is_served_its_own_page(app_server: InProcessServer) -> None:
    upload(app_server, {("", "index.html"): b"<h1>llo</h1>", ("", "notes.txt"): b"x"})
    response = get(f"{app_server.url}/{REPORT}/")
    assert response.status_code == 200 and response.text == "<h1>llo</h1>"


def test_event_directory_lists_the_projects_reports(app_server: InProcessServer) -> None:
    upload(app_server, {("", "a.txt"): b"a" * 1536})
    upload(app_server, {("", "b.txt"): b"b"}, uploader="virgo", revision=2)
    upload(app_server, {("", "c.txt"): b"c"}, project="personal")
    response = get(f"{app_server.url}/{EVENT}/")
    assert response.status_code == 200, response.text
    for name, value in REPORT_HEADERS.items():
        assert response.headers[name] == value, name
    assert [row[:5] for row in rows(response.text)] == [
        ["S230518h_llo_1/", "LLO", "1", "1", "1.5 KiB"],
        ["S230518h_virgo_2/", "Virgo", "2", "1", "1 B"],
    ]
    assert links(response.text) == ["S230518h_llo_1/", "S230518h_virgo_2/"]
    assert '<a href="/events/S230518h?project=O4">' in response.text
    personal = get(f"{app_server.url}/reports/personal/S230518h_dir/")
    assert [row[0] for row in rows(personal.text)] == ["S230518h_llo_1/"]
    # Without the slash: to the directory, as a file server does.
    bare = get(f"{app_server.url}/{EVENT}", allow_redirects=False)
    assert bare.status_code == 301 and bare.headers["Location"].endswith(f"/{EVENT}/")


def test_no_listing_where_nothing_was_recorded(app_server: InProcessServer) -> None:
    upload(app_server, {("plots", "a.png"): b"a"})
    for path in (
        "reports/O4/S230601a_dir/",  # no report of that event
        "reports/MDC/S230518h_dir/",  # none in that project
        f"{EVENT}/S230518h_lho_1/",  # no such report
        f"{REPORT}/plots/",  # a report's sub-directory: its files are in the report's list
        "reports/O4/S23_dir/",  # not an event
        "reports/O4/S230518h_dir/S230518h_llo/",  # not a report
        "reports/O4/",
        "reports/nope/S230518h_dir/",
    ):
        response = get(f"{app_server.url}/{path}")
        assert response.status_code == 404, path
        for name, value in REPORT_HEADERS.items():
            assert response.headers[name] == value, (path, name)


def test_listings_without_serving_files(data_dir: Path) -> None:
    """Behind a front end (``serve_reports = false``) the app serves no file,
    but the directories the front end passes it are listed."""
    config = data_dir.parent / "server.toml"
    config.write_text("auto_upgrade = true\nserve_reports = false\n")
    with in_process_server(data_dir, config) as server:
        upload(server, {("", "index.html"): b"<h1>llo</h1>"})
        assert get(f"{server.url}/{REPORT}/index.html").status_code == 404
        listing = get(f"{server.url}/{REPORT}/")
        assert listing.status_code == 200 and [row[0] for row in rows(listing.text)] == [
            "index.html"
        ]
        assert get(f"{server.url}/{EVENT}/").status_code == 200
