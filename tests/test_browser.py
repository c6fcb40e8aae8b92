"""The jQuery helper in a real browser (Debian's headless Chromium): report
pages on another origin include jQuery (from npm) and ``/static/dqrxfer.js``
from a live server that holds reports of three sites, uploaded through the tus
endpoint by ``dqr-upload``."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dqrxfer.progress import human_bytes
from support.browser import JS_DIR, PageServer, require_browser, run_browser
from support.cli import run_cli
from support.live import LiveServer, free_port

pytestmark = pytest.mark.browser

GRACEID = "S230518h"
LATER = "S230601a"  #: an event whose first report arrives while a page polls for it
UPLOADS = [("llo", 1), ("llo", 2), ("lho", 1), ("virgo", 2)]

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title>
{jquery}
<script src="{api}/static/dqrxfer.js"></script>
</head>
<body>
<main><h1>{title}</h1><nav id="links" aria-label="Other reports"></nav></main>
<script>
{script}
</script>
</body>
</html>
"""

RENDER = """
try {{
  var promise = dqrxfer.renderLinks("#links", {graceid}, {options});
  if (promise === null) {{
    window.__done = {{ok: false, message: "no promise"}};
  }} else {{
    promise.then(
      function (reports) {{ window.__done = {{ok: true, count: reports.length}}; }},
      function (error) {{
        window.__done = {{ok: false, message: error.message, kind: error.kind}};
      }}
    );
  }}
}} catch (error) {{
  window.__done = {{ok: false, thrown: error.message}};
}}
"""

LINKS_PROMISE = """
var p = dqrxfer.links({graceid}, {{site: "LLO"}});
window.__links = {{jquery: typeof p.done === "function" && typeof p.then === "function"}};
p.then(function (reports) {{
  window.__links.sites = reports.map(function (r) {{ return r.site + r.revision; }});
}});
"""

NO_JQUERY = """
var thrown = null;
try {{ dqrxfer.links({graceid}); }} catch (error) {{ thrown = error.message; }}
var result = dqrxfer.renderLinks("#links", {graceid});
window.__done = {{ok: false, thrown: thrown, result: result}};
"""

PROBE = """
const root = document.querySelector("#links");
const text = (selector) => {
  const node = root.querySelector(selector);
  return node ? [node.textContent, node.getAttribute("role")] : null;
};
return {
  done: window.__done,
  links: window.__links || null,
  items: [...root.querySelectorAll("li.dqrxfer-report")].map((li) => ({
    site: li.dataset.site,
    revision: li.dataset.revision,
    text: li.querySelector("a").textContent,
    name: li.querySelector("a").getAttribute("aria-label") || li.querySelector("a").textContent,
    size: li.querySelector(".dqrxfer-size") ? li.querySelector(".dqrxfer-size").textContent : null,
    href: li.querySelector("a").href,
    current: li.querySelector("a").getAttribute("aria-current"),
    marked: li.classList.contains("dqrxfer-current"),
    time: li.querySelector("time").textContent,
    datetime: li.querySelector("time").getAttribute("datetime"),
    group: li.closest("section") ? li.closest("section").dataset.site : null,
  })),
  headings: [...root.querySelectorAll(".dqrxfer-site-name")].map(
    (h) => h.tagName + " " + h.textContent),
  label: root.querySelector("ul") ? root.querySelector("ul").getAttribute("aria-label") : null,
  empty: text(".dqrxfer-empty"),
  error: text(".dqrxfer-error"),
  busy: root.getAttribute("aria-busy"),
};
"""


PAGE_PROBE = """
const texts = (selector) =>
  [...document.querySelectorAll(selector)].map((n) => n.textContent.trim());
return {
  title: document.title,
  headings: texts("#reports .dqrxfer-site-name"),
  links: [...document.querySelectorAll("#reports a")].map((a) => a.getAttribute("aria-label")),
  sizes: texts("#reports .dqrxfer-size"),
  rows: [...document.querySelectorAll("table.events tbody tr")].map((tr) => [
    tr.querySelector("th a").textContent, texts("td .site").join(" "),
    tr.querySelector("td.num").textContent]),
};
"""


def page(api: str, script: str, jquery: str | None = "jquery.min.js", title: str = "DQR") -> str:
    tag = f'<script src="{jquery}"></script>' if jquery else ""
    return PAGE.format(title=title, jquery=tag, api=api, script=script)


def render(graceid: str, **options: Any) -> str:
    return RENDER.format(graceid=json.dumps(graceid), options=json.dumps(options))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict]]:
    require_browser()
    root = tmp_path_factory.mktemp("browser")
    pages_dir = root / "pages"
    pages_dir.mkdir()
    shutil.copy(JS_DIR / "node_modules/jquery/dist/jquery.min.js", pages_dir)
    with PageServer(pages_dir) as pages:
        data_dir = root / "data"
        data_dir.mkdir()
        config = root / "server.toml"
        config.write_text(
            f'data_dir = "{data_dir}"\nauto_upgrade = true\nserve_reports = true\n'
            f'cors_origins = ["{pages.origin}"]\n'
        )
        server = LiveServer(data_dir, config=config).start()
        try:
            yield visit_all(server, pages, root)
        finally:
            server.stop()


def upload_reports(server: LiveServer, pages: PageServer, work: Path) -> dict[str, int]:
    """Real uploads through the tus endpoint; the LHO report's own page uses the helper.
    Returns the size of each report (``lho1``: bytes)."""
    sizes = {}
    for site, revision in UPLOADS:
        report = work / f"{site}{revision}" / "index.html"
        report.parent.mkdir()
        script = render(GRACEID) + LINKS_PROMISE.format(graceid=json.dumps(GRACEID))
        report.write_text(
            page(server.url, script, jquery=f"{pages.origin}/jquery.min.js", title=site)
        )
        result = run_cli(
            "dqr-upload", "-s", server.url, "-p", "O4", "-g", GRACEID, "-u", site,
            "--revision", str(revision), str(report),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        sizes[f"{site}{revision}"] = report.stat().st_size
    return sizes


def visit_all(server: LiveServer, pages: PageServer, work: Path) -> dict[str, dict]:
    sizes = upload_reports(server, pages, work)
    cases = {
        "cross_origin": render(GRACEID, latest=True, current={"site": "virgo", "revision": 2}),
        "grouped": render(GRACEID, groupBySite=True, headingLevel=2),
        "empty": render("S990101zz"),
        "down": render(GRACEID, server=f"http://127.0.0.1:{free_port()}", timeout=20000),
        "bad_graceid": render("S1"),
        "refresh": render(LATER, refresh=1),
    }
    for name, script in cases.items():
        (pages.root / f"{name}.html").write_text(page(server.url, script))
    (pages.root / "no_jquery.html").write_text(
        page(server.url, NO_JQUERY.format(graceid=json.dumps(GRACEID)), jquery=None)
    )
    visits = [
        {"name": name, "url": f"{pages.origin}/{name}.html"} for name in [*cases, "no_jquery"]
    ]
    # The same page from an origin that is not configured: public reads answer it too.
    visits.append({"name": "foreign_origin", "url": f"http://127.0.0.1:{pages.port}/empty.html"})
    # The LHO report itself, served by the server, marks itself without being told.
    own = f"{server.url}/reports/O4/{GRACEID}_dir/{GRACEID}_lho_1/index.html"
    visits.append({"name": "own_report", "url": own, "links": True})
    specs = [
        {
            "url": visit["url"],
            "done": "window.__done !== undefined"
            + (" && window.__links && window.__links.sites" if visit.get("links") else ""),
            "probe": PROBE,
        }
        for visit in visits
    ]
    # The server's own pages: the event page (the helper, under a strict CSP) and the index.
    shots = Path(os.environ.get("DQRXFER_SCREENSHOT_DIR") or work)
    for name, url, done in (
        ("event_page", f"{server.url}/events/{GRACEID}", "document.querySelector('#reports ul')"),
        ("index_page", f"{server.url}/events/", "true"),
    ):
        visits.append({"name": name})
        specs.append(
            {
                "url": url,
                "done": done,
                "probe": PAGE_PROBE,
                "screenshot": str(shots / f"{name}.png"),
                "viewport": {"width": 1000, "height": 600},
            }
        )
    # Last: a page polling an event without reports, until a site uploads one.
    visits.append({"name": "refresh"})
    specs.append(
        {
            "url": f"{pages.origin}/refresh.html",
            # Three requests made: the first answer and at least two polls.
            "done": "window.__done !== undefined && performance.getEntriesByType('resource')"
            f".filter(e => e.name.indexOf('/api/v1/events/{LATER}/reports') >= 0).length >= 3",
            "signal": str(work / "refresh.signal"),
            "then": "document.querySelectorAll('#links li.dqrxfer-report').length === 1",
            "probe": PROBE,
        }
    )

    def upload_later() -> None:
        report = work / "later" / "index.html"
        report.parent.mkdir()
        report.write_text("<html>kagra</html>")
        result = run_cli(
            "dqr-upload", "-s", server.url, "-p", "O4", "-g", LATER, "-u", "kagra",
            "--revision", "0", str(report),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    outcomes = run_browser(specs, work, on_signal=upload_later)
    outcomes.append({"log": server.log(), "sizes": sizes})
    visits.append({"name": "server"})
    return {visit["name"]: outcome for visit, outcome in zip(visits, outcomes, strict=True)}


def probe(results: dict[str, dict], name: str) -> dict[str, Any]:
    outcome = results[name]
    assert "probe" in outcome, outcome
    assert not [e for e in outcome["errors"] if not e.startswith("driver")], outcome
    return outcome["probe"]


def test_links_from_another_origin_latest_revision_per_site(results: dict[str, dict]) -> None:
    seen = probe(results, "cross_origin")
    assert seen["done"] == {"ok": True, "count": 3}
    assert [(i["site"], i["revision"], i["text"]) for i in seen["items"]] == [
        ("lho", "1", "LHO revision 1"),
        ("llo", "2", "LLO revision 2"),
        ("virgo", "2", "Virgo revision 2"),
    ]
    first = seen["items"][0]
    assert first["href"].endswith(f"/reports/O4/{GRACEID}_dir/{GRACEID}_lho_1/")
    assert first["href"].startswith("http://127.0.0.1:")
    assert first["datetime"].endswith("Z") and first["time"].endswith(" UTC")
    assert first["time"] == first["datetime"][:10] + " " + first["datetime"][11:16] + " UTC"
    # The page said it is the Virgo report: exactly that one is marked.
    assert [(i["site"], i["current"], i["marked"]) for i in seen["items"]] == [
        ("lho", None, False),
        ("llo", None, False),
        ("virgo", "page", True),
    ]
    assert seen["label"] == f"Reports of {GRACEID}"
    assert seen["busy"] is None and seen["error"] is None and seen["empty"] is None


def test_grouped_by_site_newest_revision_first(results: dict[str, dict]) -> None:
    seen = probe(results, "grouped")
    assert seen["headings"] == ["H2 LHO", "H2 LLO", "H2 Virgo"]
    assert [(i["group"], i["revision"], i["text"], i["name"]) for i in seen["items"]] == [
        ("lho", "1", "revision 1", "LHO revision 1 (O4)"),
        ("llo", "2", "revision 2", "LLO revision 2 (O4)"),
        ("llo", "1", "revision 1", "LLO revision 1 (O4)"),
        ("virgo", "2", "revision 2", "Virgo revision 2 (O4)"),
    ]


def test_own_report_page_marks_itself_and_links_returns_a_jquery_promise(
    results: dict[str, dict],
) -> None:
    seen = probe(results, "own_report")
    assert seen["done"] == {"ok": True, "count": 4}
    marked = [(i["site"], i["revision"]) for i in seen["items"] if i["current"] == "page"]
    assert marked == [("lho", "1")]
    assert seen["links"] == {"jquery": True, "sites": ["llo1", "llo2"]}


def test_no_reports_is_a_quiet_status(results: dict[str, dict]) -> None:
    seen = probe(results, "empty")
    assert seen["done"] == {"ok": True, "count": 0}
    assert seen["empty"] == ["No reports for S990101zz yet.", "status"]
    assert seen["items"] == [] and seen["error"] is None


def test_server_down_is_a_readable_alert(results: dict[str, dict]) -> None:
    seen = probe(results, "down")
    assert seen["done"]["ok"] is False and seen["done"]["kind"] == "unreachable"
    text, role = seen["error"]
    assert role == "alert"
    assert text.startswith("Links to the other reports are unavailable. The report server at")
    assert text.endswith("cannot be reached.")
    assert seen["items"] == [] and seen["busy"] is None


def test_origin_not_configured_reads_the_public_links(results: dict[str, dict]) -> None:
    """Public reads answer every origin (without credentials): sandboxed report
    pages have the opaque origin ``null``, which no list of origins can name."""
    seen = probe(results, "foreign_origin")
    assert seen["done"] == {"ok": True, "count": 0}
    assert seen["empty"] == ["No reports for S990101zz yet.", "status"]
    assert not [
        line
        for line in results["foreign_origin"]["console"]
        if "CORS" in line or "Access-Control" in line
    ]


def test_bad_graceid_shows_the_servers_message(results: dict[str, dict]) -> None:
    seen = probe(results, "bad_graceid")
    assert seen["done"]["kind"] == "refused"
    assert "graceid: must be a superevent" in seen["error"][0]


def test_event_page_lists_reports_per_site_under_its_csp(results: dict[str, dict]) -> None:
    outcome = results["event_page"]
    assert outcome["errors"] == [] and outcome["console"] == [], outcome
    seen = outcome["probe"]
    assert seen["title"] == f"{GRACEID} · dqrxfer"
    assert seen["headings"] == ["LHO", "LLO", "Virgo"]
    assert seen["links"] == [
        "LHO revision 1 (O4)",
        "LLO revision 2 (O4)",
        "LLO revision 1 (O4)",
        "Virgo revision 2 (O4)",
    ]
    sizes = results["server"]["sizes"]
    assert seen["sizes"] == [size_text(1, sizes[key]) for key in ("lho1", "llo2", "llo1", "virgo2")]


def size_text(files: int, size: int) -> str:
    """What the helper shows: 1 file, 950 B / 12 files, 3.4 MiB (as dqr-upload writes sizes)."""
    return f"{files} file{'' if files == 1 else 's'}, {human_bytes(size)}"


def test_index_lists_recent_events(results: dict[str, dict]) -> None:
    outcome = results["index_page"]
    assert outcome["errors"] == [] and outcome["console"] == [], outcome
    assert outcome["probe"]["rows"] == [[GRACEID, "LHO LLO Virgo", "4"]]


def test_refresh_polls_with_304s_and_shows_a_new_report(results: dict[str, dict]) -> None:
    before = probe(results, "refresh")
    assert before["empty"] == [f"No reports for {LATER} yet.", "status"]
    after = results["refresh"]["probeAfter"]
    assert [(i["site"], i["revision"]) for i in after["items"]] == [("kagra", "0")]
    assert after["empty"] is None
    # The browser revalidated the cached answer by itself: the polls were 304s.
    polls = f'"GET /api/v1/events/{LATER}/reports HTTP/1.1" 304'
    assert results["server"]["log"].count(polls) >= 2, results["server"]["log"][-3000:]


def test_without_jquery_the_page_says_so(results: dict[str, dict]) -> None:
    seen = probe(results, "no_jquery")
    needs = "dqrxfer.js needs jQuery 3 (not the slim build): load jquery.js before dqrxfer.js."
    assert seen["done"] == {"ok": False, "thrown": needs, "result": None}
    assert seen["error"] == [needs, "alert"]
    assert any(needs in line for line in results["no_jquery"]["console"])
