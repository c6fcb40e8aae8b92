"""What a reader sees in a real browser (Debian's headless Chromium) of the
projects, the listings, the sizes and the helper's messages:

* the event page labels each report with its project and filters by project
  (``?project=``), and the helper does both on a page of another origin;
* a report without ``index.html`` and an event's directory are listings of
  the server's records, every name shown as text, every link to its file;
* sizes are in IEC binary units with one decimal, as ``dqr-upload`` writes them;
* a timeout is shown as given (1.5 s), and a page on an origin that is not in
  ``cors_origins`` is told so, where a server that is down is not.

One live server with ``public_read = false`` (the public reads then answer
only ``cors_origins``), reports uploaded by ``dqr-upload`` into two projects,
pages served from a configured origin and from another one."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from dqrxfer.progress import human_bytes
from support.browser import JS_DIR, PageServer, require_browser, run_browser
from support.cli import run_cli
from support.live import LiveServer, free_port

pytestmark = pytest.mark.browser

GRACEID = "S230518h"
HOSTILE = '<img src=x onerror="window.pwned=1">.txt'
#: (project, site, revision): {name: content}.  LLO revision 1 in two projects;
#: the MDC report has no index.html.  1280 bytes are 1.25 KiB: a tie, shown as
#: "1.2 KiB" by Python's rounding (half to even), which the helper must match.
REPORTS: dict[tuple[str, str, int], dict[str, bytes]] = {
    ("O4", "llo", 1): {"index.html": b"<h1>O4 llo</h1>", "data.json": bytes(3 * 1024 * 1024)},
    ("personal", "llo", 1): {"index.html": b"x" * 1280},
    ("O4", "lho", 2): {"index.html": b"<h1>O4 lho</h1>"},
    ("MDC", "virgo", 3): {
        "data.json": b'{"a": 1}',
        "plots/strain.png": b"PNG " + b"0" * 5000,
        HOSTILE: b"hostile name",
    },
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DQR</title>
<script src="jquery.min.js"></script>
<script src="{api}/static/dqrxfer.js"></script>
</head><body><nav id="links" aria-label="Other reports"></nav>
<script>
dqrxfer.renderLinks("#links", {graceid}, {options}).then(
  function (reports) {{ window.__done = {{ok: true, count: reports.length}}; }},
  function (error) {{ window.__done = {{ok: false, kind: error.kind, message: error.message}}; }}
);
</script></body></html>
"""

HELPER_PROBE = """
const error = document.querySelector("#links .dqrxfer-error");
return {
  done: window.__done,
  error: error ? [error.textContent, error.getAttribute("role")] : null,
  items: [...document.querySelectorAll("#links li.dqrxfer-report")].map((li) => ({
    project: li.dataset.project,
    text: li.textContent.replace(/\\s+/g, " ").trim(),
    name: li.querySelector("a").getAttribute("aria-label") || li.querySelector("a").textContent,
    label: li.querySelector(".dqrxfer-project")
      ? li.querySelector(".dqrxfer-project").textContent : null,
  })),
};
"""

EVENT_PROBE = """
const texts = (selector) =>
  [...document.querySelectorAll(selector)].map((n) => n.textContent.replace(/\\s+/g, " ").trim());
return {
  sections: [...document.querySelectorAll("#reports section")].map((section) => [
    section.querySelector(".dqrxfer-site-name").textContent,
    [...section.querySelectorAll("li")].map((li) => ({
      name: li.querySelector("a").getAttribute("aria-label"),
      project: li.querySelector(".dqrxfer-project").textContent,
      size: li.querySelector(".dqrxfer-size").textContent,
    })),
  ]),
  nav: [...document.querySelectorAll("nav.projects a")].map(
    (a) => [a.textContent, a.getAttribute("aria-current")]),
  lede: texts(".lede")[0],
  api: document.querySelector(".api a").getAttribute("href"),
};
"""

LISTING_PROBE = """
return (async () => {
  const cells = [...document.querySelectorAll("table.listing tbody tr")].map((tr) =>
    [...tr.children].map((cell) => cell.textContent.trim()));
  const links = [...document.querySelectorAll("table.listing tbody a")];
  const bodies = [];
  for (const link of links) {
    const answer = await fetch(link.href);
    bodies.push([link.textContent, answer.status, (await answer.text()).slice(0, 40)]);
  }
  return {
    title: document.title,
    lede: document.querySelector(".lede").textContent.replace(/\\s+/g, " ").trim(),
    cells: cells,
    bodies: bodies,
    images: document.images.length,
    pwned: window.pwned === undefined ? null : window.pwned,
  };
})();
"""


#: A report page on the server itself (sandboxed: its origin is ``null``) that
#: draws the links of GRACEID with the server's own copies of the scripts.
SANDBOXED = ("S230601a", "kagra", 1)


def helper_page(api: str, graceid: str, **options: Any) -> str:
    return PAGE.format(api=api, graceid=json.dumps(graceid), options=json.dumps(options))


def upload_reports(server: LiveServer, work: Path) -> None:
    for (project, site, revision), files in REPORTS.items():
        directory = work / f"{project}-{site}-{revision}"
        for name, body in files.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(body)
        result = run_cli(
            "dqr-upload", "-s", server.url, "-p", project, "-g", GRACEID, "-u", site,
            "--revision", str(revision), f"{directory}/",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    page = work / "sandboxed" / "index.html"
    page.parent.mkdir()
    page.write_text(
        helper_page("", GRACEID).replace('src="jquery.min.js"', 'src="/static/jquery-3.8.0.min.js"')
    )
    graceid, site, revision = SANDBOXED
    result = run_cli(
        "dqr-upload", "-s", server.url, "-p", "O4", "-g", graceid, "-u", site,
        "--revision", str(revision), str(page),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_browser()
    work = tmp_path_factory.mktemp("browser-reports")
    pages_dir = work / "pages"
    pages_dir.mkdir()
    (pages_dir / "jquery.min.js").write_bytes(
        (JS_DIR / "node_modules/jquery/dist/jquery.min.js").read_bytes()
    )
    # A server that accepts connections and never answers: the timeout.
    with PageServer(pages_dir) as pages, socket.create_server(("127.0.0.1", 0)) as silent:
        data_dir = work / "data"
        data_dir.mkdir()
        config = work / "server.toml"
        config.write_text(
            f'data_dir = "{data_dir}"\nauto_upgrade = true\nserve_reports = true\n'
            f'cors_origins = ["{pages.origin}"]\n[auth]\npublic_read = false\n'
        )
        server = LiveServer(data_dir, config=config).start()
        try:
            upload_reports(server, work)
            yield visit(server, pages, silent.getsockname()[1], work)
        finally:
            server.stop()


def visit(server: LiveServer, pages: PageServer, silent_port: int, work: Path) -> dict[str, Any]:
    helper_pages = {
        "all": helper_page(server.url, GRACEID, latest=True),
        "personal": helper_page(server.url, GRACEID, project="personal", showProject=False),
        "timeout": helper_page(
            server.url, GRACEID, server=f"http://127.0.0.1:{silent_port}", timeout=1500
        ),
        "down": helper_page(server.url, GRACEID, server=f"http://127.0.0.1:{free_port()}"),
    }
    for name, html in helper_pages.items():
        (pages.root / f"{name}.html").write_text(html)
    other_origin = f"http://127.0.0.1:{pages.port}"  # not in cors_origins
    done = "window.__done !== undefined"
    report_dir = f"{server.url}/reports/MDC/{GRACEID}_dir/{GRACEID}_virgo_3/"
    specs = {
        "all": {"url": f"{pages.origin}/all.html", "done": done, "probe": HELPER_PROBE},
        "personal": {"url": f"{pages.origin}/personal.html", "done": done, "probe": HELPER_PROBE},
        "timeout": {"url": f"{pages.origin}/timeout.html", "done": done, "probe": HELPER_PROBE},
        "foreign": {"url": f"{other_origin}/all.html", "done": done, "probe": HELPER_PROBE},
        "foreign_down": {"url": f"{other_origin}/down.html", "done": done, "probe": HELPER_PROBE},
        "event_page": {
            "url": f"{server.url}/events/{GRACEID}",
            "done": "document.querySelector('#reports ul')",
            "probe": EVENT_PROBE,
            "screenshot": str(work / "event_page.png"),
            "viewport": {"width": 1000, "height": 700},
        },
        "event_page_personal": {
            "url": f"{server.url}/events/{GRACEID}?project=personal",
            "done": "document.querySelector('#reports ul')",
            "probe": EVENT_PROBE,
        },
        "report_listing": {
            "url": report_dir,
            "probe": LISTING_PROBE,
            "screenshot": str(work / "report_listing.png"),
            "viewport": {"width": 1000, "height": 500},
        },
        "event_listing": {"url": f"{server.url}/reports/O4/{GRACEID}_dir/", "probe": LISTING_PROBE},
        "sandboxed": {
            "url": f"{server.url}/reports/O4/{SANDBOXED[0]}_dir/{'_'.join(map(str, SANDBOXED))}/",
            "done": done,
            "probe": HELPER_PROBE,
        },
    }
    outcomes = run_browser(list(specs.values()), work)
    results = dict(zip(specs, outcomes, strict=True))
    reports = requests.get(f"{server.url}/api/v1/events/{GRACEID}/reports", timeout=10).json()
    results["api"] = reports["reports"]
    results["server"] = {"url": server.url, "other_origin": other_origin, "silent": silent_port}
    return results


def probe(seen: dict[str, Any], name: str) -> dict[str, Any]:
    outcome = seen[name]
    assert "probe" in outcome and not outcome["errors"], outcome
    return outcome["probe"]


def sizes(seen: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(project, site) -> what the page must show, from the API's numbers."""
    return {
        (r["project"], r["site"]): f"{r['file_count']} file{'' if r['file_count'] == 1 else 's'}"
        f", {human_bytes(r['bytes'])}"
        for r in seen["api"]
    }


def test_event_page_labels_every_report_with_its_project(seen: dict[str, Any]) -> None:
    page = probe(seen, "event_page")
    shown = sizes(seen)
    assert page["sections"] == [
        ["LHO", [{"name": "LHO revision 2 (O4)", "project": "O4", "size": shown["O4", "lho"]}]],
        [
            "LLO",
            [
                {"name": "LLO revision 1 (O4)", "project": "O4", "size": shown["O4", "llo"]},
                {"name": "LLO revision 1 (personal)", "project": "personal",
                 "size": shown["personal", "llo"]},
            ],
        ],
        ["Virgo", [{"name": "Virgo revision 3 (MDC)", "project": "MDC",
                    "size": shown["MDC", "virgo"]}]],
    ]  # fmt: skip
    # IEC units, one decimal; the tie 1.25 KiB as Python rounds it.
    assert shown["O4", "llo"] == "2 files, 3.0 MiB"
    assert shown["personal", "llo"] == "1 file, 1.2 KiB"
    assert page["nav"] == [
        ["All", "page"],
        ["replay", None],
        ["MDC", None],
        ["O4", None],
        ["personal", None],
    ]
    assert page["api"] == f"/api/v1/events/{GRACEID}/reports"


def test_event_page_filters_by_project(seen: dict[str, Any]) -> None:
    page = probe(seen, "event_page_personal")
    assert [section[0] for section in page["sections"]] == ["LLO"]
    assert [item["name"] for item in page["sections"][0][1]] == ["LLO revision 1 (personal)"]
    assert ["personal", "page"] in page["nav"] and ["All", None] in page["nav"]
    assert "(here only personal)" in page["lede"]
    assert page["api"] == f"/api/v1/events/{GRACEID}/reports?project=personal"


def test_helper_labels_projects_and_filters_by_one(seen: dict[str, Any]) -> None:
    every = probe(seen, "all")
    assert every["done"] == {"ok": True, "count": 4}
    assert [(item["name"], item["label"]) for item in every["items"]] == [
        ("LHO revision 2 (O4)", "O4"),
        ("LLO revision 1 (O4)", "O4"),
        ("LLO revision 1 (personal)", "personal"),
        ("Virgo revision 3 (MDC)", "MDC"),
    ]
    one = probe(seen, "personal")
    assert one["done"] == {"ok": True, "count": 1}
    [item] = one["items"]
    # Without the project's label, as the page asked.
    assert (item["project"], item["name"], item["label"]) == ("personal", "LLO revision 1", None)
    assert item["text"].startswith("LLO revision 1 ") and "personal" not in item["text"]


def test_report_without_index_is_a_listing_of_its_files(seen: dict[str, Any]) -> None:
    page = probe(seen, "report_listing")
    assert page["title"] == f"{GRACEID}_virgo_3 (MDC) · dqrxfer"
    files = REPORTS["MDC", "virgo", 3]
    assert page["lede"].startswith(f"Virgo revision 3 of {GRACEID}: this report has no index.html")
    assert "(3 files, 4.9 KiB)" in page["lede"]
    names = sorted(files)
    assert [cells[0] for cells in page["cells"]] == names
    assert [cells[1] for cells in page["cells"]] == [human_bytes(len(files[n])) for n in names]
    assert [cells[2] for cells in page["cells"]] == [
        hashlib.sha256(files[n]).hexdigest() for n in names
    ]
    # The hostile name is text: no image, no script ran; each link reaches its file.
    assert page["images"] == 0 and page["pwned"] is None
    assert page["bodies"] == [[name, 200, files[name][:40].decode("latin-1")] for name in names]


def test_event_directory_is_a_listing_of_its_reports(seen: dict[str, Any]) -> None:
    page = probe(seen, "event_listing")
    assert page["title"] == f"{GRACEID} (O4) · dqrxfer"
    assert [cells[:3] for cells in page["cells"]] == [
        [f"{GRACEID}_lho_2/", "LHO", "2"],
        [f"{GRACEID}_llo_1/", "LLO", "1"],
    ]
    assert [cells[4] for cells in page["cells"]] == ["15 B", "3.0 MiB"]
    assert [body[:2] for body in page["bodies"]] == [
        [f"{GRACEID}_lho_2/", 200],
        [f"{GRACEID}_llo_1/", 200],
    ]
    assert page["bodies"][0][2] == "<h1>O4 lho</h1>"  # a report's own index.html


def test_timeout_is_shown_as_given(seen: dict[str, Any]) -> None:
    page = probe(seen, "timeout")
    assert page["done"]["kind"] == "timeout"
    silent = seen["server"]["silent"]
    assert page["error"] == [
        "Links to the other reports are unavailable. The report server at "
        f"http://127.0.0.1:{silent} did not answer within 1.5 s.",
        "alert",
    ]


def test_origin_not_in_cors_origins_is_told_so(seen: dict[str, Any]) -> None:
    page = probe(seen, "foreign")
    server, origin = seen["server"]["url"], seen["server"]["other_origin"]
    assert page["done"]["kind"] == "cross-origin"
    assert page["error"] == [
        "Links to the other reports are unavailable. "
        f"The report server at {server} cannot be reached from pages on {origin}: it answers, "
        f"but not to this origin. Add {origin} to cors_origins in the server's configuration.",
        "alert",
    ]
    # A server that is down is not blamed on cors_origins.
    down = probe(seen, "foreign_down")
    assert down["done"]["kind"] == "unreachable"
    assert down["error"][0].endswith("cannot be reached.")


def test_sandboxed_page_is_told_why_cors_origins_cannot_help(seen: dict[str, Any]) -> None:
    """A report page served by the server runs sandboxed (origin ``null``):
    with ``public_read = false`` no ``cors_origins`` entry can let it read."""
    page = probe(seen, "sandboxed")
    server = seen["server"]["url"]
    assert page["done"]["kind"] == "cross-origin"
    assert page["error"] == [
        "Links to the other reports are unavailable. "
        f"The report server at {server} cannot be reached from a sandboxed page (origin null): "
        "it answers, but only to the origins in its cors_origins, which cannot name a sandbox. "
        "Its public_read setting opens the links to every page.",
        "alert",
    ]
