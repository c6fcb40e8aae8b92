"""Links that escape a report only once several uploads are combined, sent to
a live server by raw tus requests and by ``dqr-upload``.

Each case publishes what a per-archive check accepts (a link climbing
through a name that does not exist yet, or is a file, a directory or another
link), then sends the upload that would make it escape: that upload is
refused with 422 naming the entry and the rule, the report is unchanged, and
no URL under ``/reports/`` returns anything from outside the report.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from support import tars
from support.cli import run_cli, run_in_process
from support.live import LiveServer
from support.tars import directory, file, symlink
from support.trees import plant, snapshot
from support.tus import Sent, send, tar_metadata, wait_for

GRACEID = "S230518h"
RULE = "every symbolic link must resolve inside its report"
#: What must never come back from the server: /etc/passwd's first line.
PASSWD = Path("/etc/passwd").read_text().split("\n", 1)[0]


def up(levels: int) -> str:
    return "../" * levels


@dataclass(frozen=True)
class Upload:
    payload: bytes
    kind: str = "tar"
    subdir: str = ""
    filename: str = "report.tar"


@dataclass(frozen=True)
class Case:
    """Uploads accepted in turn, then the one refused with ``message``; ``probe``
    is the report path whose URL would have served the escaped file."""

    accepted: list[Upload]
    refused: Upload
    message: str
    probe: str


def tar(*entries: tars.Entry, subdir: str = "") -> Upload:
    return Upload(tars.build(entries), subdir=subdir)


def escape_cases(depth: int) -> dict[str, Case]:
    """The variations, for a report ``depth`` levels below ``/``: ``b`` sits
    ``depth`` directories down, so climbing that far from the report
    directory reaches ``/``."""
    d = "/".join(f"d{level}" for level in range(1, depth + 1))
    climb = f"f/{up(depth + 1)}etc/passwd"  # inside the report as written: f/.. is d
    escapes = f"'{d}/b': symbolic link to '{climb}' leaves the report (through the link '{d}/"
    to_root = up(depth)  # from d/f: the report directory itself
    return {
        "two-archives": Case(
            [tar(symlink(f"{d}/b", climb))],
            tar(symlink(f"{d}/f", to_root)),
            escapes + "f')",
            f"{d}/b",
        ),
        "file-replaced-by-link": Case(
            [tar(file(f"{d}/f", "plain"), symlink(f"{d}/b", climb))],
            tar(symlink(f"{d}/f", to_root)),
            escapes + "f')",
            f"{d}/b",
        ),
        "single-file-then-archives": Case(
            [
                Upload(b"plain", kind="file", subdir=d, filename="f"),
                tar(symlink(f"{d}/b", climb)),
            ],
            tar(symlink(f"{d}/f", to_root)),
            escapes + "f')",
            f"{d}/b",
        ),
        "link-retargeted": Case(
            [tar(symlink(f"{d}/b", climb)), tar(directory(f"{d}/e"), symlink(f"{d}/f", "e"))],
            tar(symlink(f"{d}/f", to_root)),
            escapes + "f')",
            f"{d}/b",
        ),
        # The first pass into the sub-directory d1 (its links are checked
        # against d1), the second into the report's top.
        "across-subdirs": Case(
            [tar(symlink(f"{d.split('/', 1)[1]}/b", f"f/{up(depth)}etc/passwd"), subdir="d1")],
            tar(symlink(f"{d}/f", to_root)),
            f"'{d}/b': symbolic link to 'f/{up(depth)}etc/passwd' leaves the report "
            f"(through the link '{d}/f')",
            f"{d}/b",
        ),
        "link-chain": Case(
            [tar(symlink(f"{d}/b", climb)), tar(symlink(f"{d}/f", "g"))],
            tar(symlink(f"{d}/g", to_root)),
            escapes + "f')",  # the first link on the way, which leads through g
            f"{d}/b",
        ),
        "directory-replaced-by-link": Case(
            [tar(file(f"{d}/f/x", "x"), symlink(f"{d}/b", climb))],
            tar(symlink(f"{d}/f", to_root)),
            f"archive: '{d}/f': the report has a directory of that name",
            f"{d}/b",
        ),
        "into-a-sibling-report": Case(
            [tar(symlink("b", f"f/../{GRACEID}_llo_10/index.html"))],
            tar(symlink("f", ".")),
            f"'b': symbolic link to 'f/../{GRACEID}_llo_10/index.html' leaves the report "
            "(through the link 'f')",
            "b",
        ),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("escape") / "data"
    data.mkdir()
    running = LiveServer(data).start()
    sibling = tars.report_tree({"index.html": "<html>sibling report</html>"})
    assert send(running.url, sibling, tar_metadata(revision=10)).final.status_code == 204
    yield running
    running.discard()


def depth_of(server: LiveServer, revision: int) -> int:
    """Levels from ``/`` down to the report directory."""
    return len(server.published(revision=revision).resolve().parts) - 1


_revisions = iter(range(100, 1000))


def sent(server: LiveServer, upload: Upload, revision: int) -> Sent:
    metadata = tar_metadata(
        filename=upload.filename, kind=upload.kind, revision=revision, subdir=upload.subdir
    )
    return send(server.url, upload.payload, metadata)


def assert_nothing_escapes(server: LiveServer, revision: int, path: str) -> None:
    url = f"{server.url}/reports/O4/{GRACEID}_dir/{GRACEID}_llo_{revision}/{path}"
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 404, (answer.status_code, answer.text[:200])
    assert PASSWD not in answer.text and "sibling report" not in answer.text


@pytest.mark.parametrize(
    "name",
    [
        "two-archives",
        "file-replaced-by-link",
        "single-file-then-archives",
        "link-retargeted",
        "across-subdirs",
        "link-chain",
        "directory-replaced-by-link",
        "into-a-sibling-report",
    ],
)
def test_an_upload_that_would_make_a_link_escape_is_refused(server: LiveServer, name: str) -> None:
    revision = next(_revisions)
    case = escape_cases(depth_of(server, revision))[name]
    for upload in case.accepted:
        answer = sent(server, upload, revision).final
        assert answer.status_code == 204, answer.text
    report = server.published(revision=revision)
    before = snapshot(report)

    refused = sent(server, case.refused, revision).final

    assert refused.status_code == 422, refused.text
    assert case.message in refused.text, refused.text
    assert refused.text.rstrip().endswith("nothing was published")
    if "directory of that name" not in case.message:
        assert RULE in refused.text
    assert snapshot(report) == before
    assert not any((server.data_dir / "reports/O4/.dqrxfer-staging/work").iterdir())
    assert_nothing_escapes(server, revision, case.probe)


def test_dqr_upload_is_refused_the_same_way(server: LiveServer, tmp_path: Path) -> None:
    revision = next(_revisions)
    case = escape_cases(depth_of(server, revision))["two-archives"]
    first, second = tmp_path / "first.tar", tmp_path / "second.tar"
    first.write_bytes(case.accepted[0].payload)
    second.write_bytes(case.refused.payload)
    options = ["-s", server.url, "-p", "O4", "-g", GRACEID, "-u", "llo"]
    options += ["--revision", str(revision)]

    accepted = run_cli("dqr-upload", *options, str(first))
    assert accepted.returncode == 0, accepted.stderr
    before = snapshot(server.published(revision=revision))
    refused = run_cli("dqr-upload", *options, str(second))

    assert refused.returncode == 4, refused.stderr
    assert case.message in refused.stderr and RULE in refused.stderr
    assert snapshot(server.published(revision=revision)) == before
    assert_nothing_escapes(server, revision, case.probe)


def test_single_files_cannot_land_under_a_link_and_neutralise_one_they_replace(
    server: LiveServer,
) -> None:
    revision = next(_revisions)
    depth = depth_of(server, revision)
    case = escape_cases(depth)["link-retargeted"]
    for upload in case.accepted:
        assert sent(server, upload, revision).final.status_code == 204
    d = "/".join(f"d{level}" for level in range(1, depth + 1))
    report = server.published(revision=revision)
    before = snapshot(report)

    under = sent(server, Upload(b"x", kind="file", subdir=f"{d}/f", filename="y"), revision)
    assert under.final.status_code == 422
    assert f"subdir: '{d}/f': the report has a symbolic link here" in under.final.text
    assert snapshot(report) == before

    # A file over the link 'f' that 'b' climbs through: 'b' now ends at a
    # file (resolves nowhere), and stays inside as written.
    over = sent(server, Upload(b"plain", kind="file", subdir=d, filename="f"), revision)
    assert over.final.status_code == 204, over.final.text
    assert snapshot(report)[f"{d}/f"] != before[f"{d}/f"]
    assert_nothing_escapes(server, revision, f"{d}/b")
    escape = sent(server, case.refused, revision).final
    assert escape.status_code == 422 and case.message in escape.text


#: Paths a client may send to get out of the report tree (unnormalised, raw).
TRAVERSALS = [
    "/reports/O4/../../dqrxfer.sqlite",
    "/reports/O4/%2e%2e/%2e%2e/dqrxfer.sqlite",
    "/reports/O4/..%2f..%2fdqrxfer.sqlite",
    f"/reports/O4/{GRACEID}_dir/{GRACEID}_llo_10/../../../../dqrxfer.sqlite",
    "/reports/O4//etc/passwd",
    "/reports/O4/.dqrxfer-staging/locks/",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_url_reads_outside_the_report_tree(server: LiveServer, path: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        body = answer.read()
    finally:
        connection.close()
    # 308: Werkzeug merging '//' (to a path inside the tree, answered 404 in turn).
    assert answer.status in (308, 400, 404), (answer.status, body[:200])
    assert b"SQLite format" not in body and PASSWD.encode() not in body


def test_the_reports_route_serves_only_inside_the_report(server: LiveServer) -> None:
    revision = next(_revisions)
    files = {"index.html": "<html>mine</html>", "tier1/data.json": "{}"}
    published = send(server.url, tars.report_tree(files), tar_metadata(revision=revision))
    assert published.final.status_code == 204, published.final.text
    report = server.published(revision=revision)
    depth = depth_of(server, revision)
    plant(
        report,
        {
            "passwd": f"{up(depth)}etc/passwd",
            "sibling.html": f"../{GRACEID}_llo_10/index.html",
            "out-and-back.html": f"../{GRACEID}_llo_{revision}/index.html",
            "database": "../../../../dqrxfer.sqlite",
            "latest": "tier1",
            "home.html": "index.html",
        },
    )
    os.mkfifo(report / "pipe")
    base = f"{server.url}/reports/O4/{GRACEID}_dir/{GRACEID}_llo_{revision}"

    for name in ("passwd", "sibling.html", "database", "pipe"):
        answer = requests.get(f"{base}/{name}", timeout=10)
        assert answer.status_code == 404, name
        assert PASSWD not in answer.text and "sibling report" not in answer.text
    # Links inside the report are served (even one written via its parent).
    assert requests.get(f"{base}/latest/data.json", timeout=10).text == "{}"
    assert requests.get(f"{base}/home.html", timeout=10).text == files["index.html"]
    assert requests.get(f"{base}/out-and-back.html", timeout=10).text == files["index.html"]
    assert requests.get(f"{base}/", timeout=10).text == files["index.html"]

    # A report directory that is itself a link serves nothing.
    alias = report.parent / f"{GRACEID}_llo_{revision + 1}"
    alias.symlink_to(f"{GRACEID}_llo_10")
    aliased = f"{server.url}/reports/O4/{GRACEID}_dir/{alias.name}/index.html"
    assert requests.get(aliased, timeout=10).status_code == 404


def test_recovery_does_not_publish_a_pass_that_would_make_a_link_escape(
    tmp_path: Path,
) -> None:
    """The escaping pass is cut by a crash after its own checks, before
    publication; recovery finalizes it again on restart and refuses it."""
    data = tmp_path / "data"
    data.mkdir()
    first = LiveServer(data).start()
    try:
        depth = len(first.published().resolve().parts) - 1
        case = escape_cases(depth)["two-archives"]
        assert sent(first, case.accepted[0], 1).final.status_code == 204
    finally:
        first.stop()
    report = first.published()
    before = snapshot(report)

    marker = tmp_path / "reached"
    crashing = LiveServer(data, env={"DQRXFER_TEST_FAULT": f"after-extract:{marker}"}).start()
    metadata = tar_metadata()
    finished: list[Sent] = []
    thread = threading.Thread(
        target=lambda: _send_quietly(crashing.url, case.refused.payload, metadata, finished),
        daemon=True,
    )
    try:
        thread.start()
        wait_for(marker.exists, timeout=60, what="the fault point after-extract")
    finally:
        crashing.stop(signal.SIGKILL)
    thread.join(timeout=60)
    assert snapshot(report) == before
    # The cut upload is the one still unfinished (the first one is done).
    (upload_id,) = [path.stem for path in (data / "uploads").glob("*.info")]

    restarted = LiveServer(data).start()
    try:

        def settled() -> str | None:
            record = requests.get(f"{restarted.url}/api/v1/uploads/{upload_id}", timeout=10)
            state = record.json()["state"]
            return record.json()["error"] if state != "receiving" else None

        error = wait_for(settled, timeout=60, what="recovery to finalize the upload")
        assert case.message in error and RULE in error
        assert snapshot(report) == before
        assert_nothing_escapes(restarted, 1, case.probe)
    finally:
        restarted.discard()


def _send_quietly(url: str, payload: bytes, metadata: dict[str, str], finished: list[Sent]) -> None:
    with contextlib.suppress(requests.RequestException, AssertionError):
        finished.append(send(url, payload, metadata))


def test_register_and_reindex_refuse_a_tree_that_escapes(data_dir: Path, tmp_path: Path) -> None:
    def server_cli(*args: str) -> tuple[int, str]:
        result = run_in_process("dqrxfer-server", *args, "--data-dir", str(data_dir))
        return result.returncode, result.stdout + result.stderr

    register = ["reports", "register", "--project", "O4", "--graceid", GRACEID, "--site", "llo"]
    first, second = tmp_path / "first", tmp_path / "second"
    plant(first, {"d/b": "f/../../x"})
    plant(second, {"d/f": ".."})
    assert server_cli("db", "upgrade")[0] == 0
    status, output = server_cli(*register, "--revision", "1", "--path", str(first))
    assert status == 0, output
    report = data_dir / f"reports/O4/{GRACEID}_dir/{GRACEID}_llo_1"
    before = snapshot(report)

    status, output = server_cli(*register, "--revision", "1", "--path", str(second))

    assert status == 1
    assert (
        f"{second}: 'd/b': symbolic link to 'f/../../x' leaves the report (through the link "
        f"'d/f'); {RULE}; nothing was published"
    ) in output
    assert snapshot(report) == before

    # A tree changed by hand: reindex does not adopt it, nor does register in place.
    by_hand = report.parent / f"{GRACEID}_llo_7"
    plant(by_hand, {"sibling.html": f"../{GRACEID}_llo_1/d"})
    status, output = server_cli("reindex")
    assert status == 0, output
    skipped = (
        f"O4/{GRACEID}_dir/{GRACEID}_llo_7: 'sibling.html': symbolic link to "
        f"'../{GRACEID}_llo_1/d' leaves the report; {RULE}; not indexed"
    )
    assert skipped in output
    status, output = server_cli(*register, "--revision", "7", "--path", str(by_hand))
    assert status == 1 and skipped in output
    status, output = server_cli("reports", "show", f"{GRACEID}_llo_7")
    assert status != 0 and f"{GRACEID}_llo_7" in output
