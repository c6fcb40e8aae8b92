"""Take the screenshots of the server's pages shown in docs/api.md.

Starts a server on loopback with example reports, opens the pages in headless
Chromium (the browser tests' driver, tests/js/browser.mjs) and writes PNG
files into docs/.  Needs what the tests need (``ops/dev/bootstrap.sh --test``):

    .venv/bin/python ops/dev/screenshots.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.browser import run_browser  # noqa: E402
from support.live import LiveServer  # noqa: E402
from support.seed import Seed, seed  # noqa: E402

REPORTS = [
    Seed("S230518h", "llo", 1, minutes=0, file_count=41, total_bytes=18_300_000),
    Seed("S230518h", "lho", 1, minutes=4, file_count=41, total_bytes=17_900_000),
    Seed("S230518h", "virgo", 1, minutes=9, file_count=38, total_bytes=12_400_000),
    Seed("S230518h", "llo", 2, minutes=42, file_count=44, total_bytes=19_100_000),
    # A site's own trial in another project: the page labels it.
    Seed(
        "S230518h", "llo", 1, project="personal", minutes=30, file_count=12, total_bytes=2_300_000
    ),
    Seed("S230518h", "kagra", 1, minutes=55, file_count=26, total_bytes=6_200_000),
    Seed("S230520ab", "llo", 1, minutes=2900, file_count=40, total_bytes=17_000_000),
    Seed("S230520ab", "lho", 1, minutes=2903, file_count=40, total_bytes=16_800_000),
    Seed("GW230529A", "virgo", 3, project="MDC", minutes=15000),
    Seed("G123456", "llo", 1, project="replay", minutes=16000),
    Seed("1368449966.167", "lho", 0, project="personal", minutes=17000),
]


def main() -> int:
    docs = ROOT / "docs"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        data.mkdir()
        server = LiveServer(data).start()
        try:
            seed(f"sqlite:///{data / 'dqrxfer.sqlite'}", REPORTS)
            pages = [
                (f"{server.url}/events/S230518h", "document.querySelector('#reports ul')",
                 "event-page.png", 740),
                (f"{server.url}/events/", "true", "events-index.png", 470),
            ]  # fmt: skip
            results = run_browser(
                [
                    {
                        "url": url,
                        "done": done,
                        "screenshot": str(docs / name),
                        "viewport": {"width": 1000, "height": height},
                        "fullPage": False,
                    }
                    for url, done, name, height in pages
                ],
                work,
            )
        finally:
            server.stop()
    problems = [error for result in results for error in result["errors"]]
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
