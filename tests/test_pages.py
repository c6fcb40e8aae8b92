"""The server's HTML pages and static files over HTTP (the browser tests look
at them rendered): index of recent events, event pages, the helper."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from support.browser import JS_DIR
from support.live import LiveServer
from support.seed import Seed, seed

SEEDS = [
    Seed("S230518h", "llo", 1, minutes=0),
    Seed("S230518h", "virgo", 1, minutes=5),
    *[Seed(f"G{40000 + i}", "kagra", 1, minutes=10 + i) for i in range(53)],
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("pages") / "data"
    data_dir.mkdir()
    live = LiveServer(data_dir).start()
    seed(f"sqlite:///{data_dir / 'dqrxfer.sqlite'}", SEEDS)
    yield live
    live.discard()


def get(server: LiveServer, path: str, **kwargs: object) -> requests.Response:
    return requests.get(f"{server.url}{path}", timeout=10, **kwargs)  # type: ignore[arg-type]


def event_rows(html: str) -> list[str]:
    return re.findall(r'<th scope="row"><a href="/events/([^"]+)">', html)


def test_home_leads_to_the_index(server: LiveServer) -> None:
    response = get(server, "/", allow_redirects=False)
    assert response.status_code == 302 and response.headers["Location"] == "/events/"


def test_index_lists_events_newest_first_and_pages(server: LiveServer) -> None:
    response = get(server, "/events/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    rows = event_rows(response.text)
    assert rows == [f"G{40000 + i}" for i in range(52, 2, -1)]
    assert '<li class="site site-kagra">KAGRA</li>' in response.text
    older = re.search(r'<a href="([^"]+)" rel="next">Older events</a>', response.text)
    assert older is not None
    second = get(server, older.group(1).replace("&amp;", "&"))
    assert event_rows(second.text) == ["G40002", "G40001", "G40000", "S230518h"]
    assert 'rel="next"' not in second.text
    assert '<li class="site site-llo">LLO</li><li class="site site-virgo">Virgo</li>' in (
        second.text
    )


def test_index_revalidates_with_304(server: LiveServer) -> None:
    first = get(server, "/events/")
    assert first.headers["Cache-Control"] == "no-cache"
    again = get(server, "/events/", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""


def test_bad_cursor_is_a_400_page(server: LiveServer) -> None:
    response = get(server, "/events/?cursor=x")
    assert response.status_code == 400
    assert "cursor: is not a cursor given by this API" in response.text
    assert response.headers["Cache-Control"] == "no-store"


def test_empty_index_says_so(live_server: LiveServer) -> None:
    response = get(live_server, "/events/")
    assert response.status_code == 200 and "No reports have arrived yet." in response.text


def test_event_page_loads_the_helper(server: LiveServer) -> None:
    response = get(server, "/events/S230518h")
    assert response.status_code == 200
    html = response.text
    assert "<title>S230518h · dqrxfer</title>" in html
    assert 'data-graceid="S230518h"' in html and 'data-refresh="30"' in html
    scripts = re.findall(r'<script src="([^"]+)" defer></script>', html)
    assert scripts == [
        "/static/jquery-3.8.0.min.js",
        "/static/dqrxfer.js",
        "/static/event-page.js",
    ]
    for script in scripts:
        served = get(server, script)
        assert served.status_code == 200, script
        assert served.headers["Content-Type"].startswith("text/javascript"), script
    assert get(server, "/static/dqrxfer.css").status_code == 200
    # Events without reports have a page too (it waits for them).
    assert get(server, "/events/GW230529A").status_code == 200


def test_event_page_filters_by_project(server: LiveServer) -> None:
    """``?project=`` reaches the helper (``data-project``) and the JSON link;
    the project links mark the one shown; an unknown project is a 400 page."""
    every = get(server, "/events/S230518h").text
    assert 'data-project=""' in every
    assert '<a href="/events/S230518h" aria-current="page">All</a>' in every
    assert '<a href="/events/S230518h?project=personal">personal</a>' in every
    one = get(server, "/events/S230518h?project=PERSONAL")  # the configured spelling back
    assert one.status_code == 200
    assert 'data-project="personal"' in one.text
    assert '<a href="/events/S230518h?project=personal" aria-current="page">personal</a>' in (
        one.text
    )
    assert '<a href="/api/v1/events/S230518h/reports?project=personal">' in one.text
    bad = get(server, "/events/S230518h?project=O5")
    assert bad.status_code == 400
    assert "project: must be one of MDC, O4, personal, replay (got &#39;O5&#39;)" in bad.text


def test_event_page_of_an_invalid_graceid_is_a_400_page(server: LiveServer) -> None:
    response = get(server, "/events/S23<b>")
    assert response.status_code == 400
    assert "graceid: must be a superevent" in response.text
    assert "S23&lt;b&gt;" in response.text and "<b>" not in response.text


def test_served_jquery_is_the_tested_one(server: LiveServer) -> None:
    """The server's copy of jQuery is the release the browser tests run with."""
    pinned = json.loads((JS_DIR / "package.json").read_text())["dependencies"]["jquery"]
    served = get(server, f"/static/jquery-{pinned}.min.js")
    assert served.status_code == 200
    assert served.text.startswith(f"/*! jQuery v{pinned} ")
    npm_copy = JS_DIR / "node_modules/jquery/dist/jquery.min.js"
    if npm_copy.exists():
        assert served.content == Path(npm_copy).read_bytes()
