"""tus-js-client in a real browser (Debian's headless Chromium) on another
origin uploads to the live server: CORS lets a configured origin upload
(chunks, and parallel uploads through concatenation) and stops any other."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.browser import JS_DIR, PageServer, require_browser, run_browser
from support.live import LiveServer
from support.tus import published, record, report_metadata, write_config

pytestmark = pytest.mark.browser

SIZE = 3 * 1024 * 1024 + 77

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>tus upload</title>
<script src="tus.min.js"></script>
<script>
// The payload: byte i is (i * 7 + (i >> 11)) % 251, the same as pattern() in the test.
function payload(size) {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 7 + (i >> 11)) % 251;
  return new Blob([bytes]);
}
function upload(options) {
  return new Promise((resolve) => {
    const settings = Object.assign({
      endpoint: ENDPOINT,
      retryDelays: [0, 200, 1000],
      onSuccess: () => resolve({ url: task.url }),
      onError: (error) => resolve({ error: String(error) }),
    }, options);
    const task = new tus.Upload(payload(SIZE), settings);
    task.start();
  });
}
</script>
"""


def pattern(size: int) -> bytes:
    return bytes((i * 7 + (i >> 11)) % 251 for i in range(size))


def write_page(root: Path, endpoint: str, uploads: list[dict]) -> None:
    """A page that runs ``uploads`` (tus-js-client options) at once and puts
    their outcomes in ``window.results``."""
    shutil.copy(JS_DIR / "node_modules" / "tus-js-client" / "dist" / "tus.min.js", root)
    calls = ", ".join(f"upload({json.dumps(options)})" for options in uploads)
    (root / "index.html").write_text(
        PAGE
        + "<script>\n"
        + f"const ENDPOINT = {json.dumps(endpoint)};\nconst SIZE = {SIZE};\n"
        + f"Promise.all([{calls}]).then((results) => {{ window.results = results; }});\n"
        + "</script>\n"
    )


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PageServer, PageServer]]:
    require_browser()
    root = tmp_path_factory.mktemp("tus-pages")
    (root / "allowed").mkdir()
    (root / "other").mkdir()
    with PageServer(root / "allowed") as allowed, PageServer(root / "other") as other:
        yield allowed, other


def test_browser_upload_from_a_configured_origin(
    pages: tuple[PageServer, PageServer], tmp_path: Path, data_dir: Path
) -> None:
    allowed, other = pages
    config = write_config(tmp_path / "config.toml", cors_origins=[allowed.origin])
    server = LiveServer(data_dir, config=config).start()
    try:
        chunked = report_metadata()
        parallel = report_metadata()
        write_page(
            allowed.root,
            f"{server.url}/files/",
            [
                {"metadata": chunked, "chunkSize": 512 * 1024},
                {
                    "metadata": parallel,
                    "metadataForPartialUploads": parallel,
                    "parallelUploads": 3,
                },
            ],
        )
        write_page(other.root, f"{server.url}/files/", [{"metadata": report_metadata()}])
        results = run_browser(
            [
                {
                    "url": f"{origin}/index.html",
                    "done": "window.results !== undefined",
                    "probe": "return window.results;",
                }
                for origin in (allowed.origin, other.origin)
            ],
            tmp_path,
        )
    finally:
        server.stop()

    good, refused = results
    assert good["errors"] == [], good
    expected = pattern(SIZE)
    for outcome, metadata in zip(good["probe"], (chunked, parallel), strict=True):
        assert "url" in outcome, outcome
        assert published(server, metadata).read_bytes() == expected
    server.start()
    try:
        for outcome in good["probe"]:
            assert record(server, outcome["url"])["state"] == "published"
    finally:
        server.stop()

    # The browser refuses to show the server's answers to an origin not configured.
    (outcome,) = refused["probe"]
    assert "error" in outcome and "url" not in outcome
    assert any("CORS" in line or "Access-Control" in line for line in refused["console"]), refused
