"""Hostile archives against a live server: every one is refused on the final
PATCH with a message naming the first offending member, nothing is written
outside the staging directory, and the report is unchanged (tree and rows).

One server (module scope) receives the whole corpus; a first, honest upload
gives the target report and a sibling report content to protect.  It runs the
embedded default but for a member limit of 1000 (the default, 50000, is
checked in ``tests/test_server_config.py``): an archive over the limit costs
the server a read of that many headers, and the point is that one far over
it is refused, not the seconds a read of 50000 would take.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from dqrxfer.server.db import Report, ReportFile, Upload
from support import tars
from support.live import LiveServer
from support.tars import directory, file, hardlink, special, symlink
from support.tus import resend_last_patch, send, tar_metadata

GRACEID = "S230518h"
#: The server's tar_max_members.
MEMBERS = 1000
#: From the extraction root (<reports_root>/.dqrxfer-staging/work/<id>/extract)
#: up to the test's temporary directory: a member climbing this far would land
#: beside the data directory.
CLIMB = "../" * len(Path("data/reports/O4/.dqrxfer-staging/work/x/extract").parts)


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("hostile")
    data = base / "data"
    data.mkdir()
    config = base / "server.toml"
    config.write_text(f"serve_reports = true\nauto_upgrade = true\ntar_max_members = {MEMBERS}\n")
    server = LiveServer(data, config=config).start()
    good = tars.report_tree({"index.html": "<html>good</html>", "tier1/data.json": "{}"})
    for revision in (1, 10):
        sent = send(server.url, good, tar_metadata(revision=revision))
        assert sent.final.status_code == 204, sent.final.text
    yield server
    server.discard()


def snapshot(root: Path) -> dict[str, tuple[str, str]]:
    """Everything under ``root`` a refusal could have touched, by relative path.

    Left out: the tus uploads (each attempt adds one), the database (checked
    separately), server logs, and the staging area's lock files.
    """
    seen: dict[str, tuple[str, str]] = {}
    for directory_path, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory_path) / name
            rel = path.relative_to(root).as_posix()
            if (
                rel.startswith("data/uploads")
                or rel.startswith("data/dqrxfer.sqlite")
                or (rel.startswith("server-") and rel.endswith(".log"))
                or "/.dqrxfer-staging/locks" in f"/{rel}"
            ):
                continue
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                seen[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(mode):
                seen[rel] = ("dir", "")
            elif stat.S_ISREG(mode):
                seen[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                seen[rel] = ("special", oct(mode))
    return seen


def rows(data_dir: Path) -> list[tuple]:
    engine = create_engine(f"sqlite:///{data_dir / 'dqrxfer.sqlite'}")
    with Session(engine) as session:
        reports = [
            (r.id, r.site, r.revision, r.file_count, r.total_bytes, r.updated)
            for r in session.scalars(select(Report).order_by(Report.id))
        ]
        files = [
            (f.report_id, f.relpath, f.size, f.sha256)
            for f in session.scalars(select(ReportFile).order_by(ReportFile.id))
        ]
    engine.dispose()
    return [reports, files]


def upload_state(data_dir: Path, upload_id: str) -> tuple[str, str | None]:
    engine = create_engine(f"sqlite:///{data_dir / 'dqrxfer.sqlite'}")
    with Session(engine) as session:
        row = session.get(Upload, upload_id)
        assert row is not None
        result = (row.state, row.error)
    engine.dispose()
    return result


def cve_2025_4517_chain() -> bytes:
    """The shape of the published CVE-2025-4517 exploit: long directory names,
    a chain of symlinks through them, a link escaping through the chain, and a
    file written through that link."""
    component = "d" * 200
    steps = "abcdefghijklmnop"
    entries = []
    path = ""
    for step in steps:
        entries.append(directory(f"{path}{component}"))
        entries.append(symlink(f"{path}{step}", component))
        path += f"{component}/"
    chain = "/".join(steps)
    entries.append(symlink(f"{chain}/l", "../" * len(steps)))
    entries.append(symlink("escape", f"{chain}/l/" + "../" * 8 + "etc"))
    entries.append(file("escape/passwd", "pwned"))
    return tars.build(entries)


def absolute_target(base: Path) -> str:
    return str(base / "escaped-absolute")


#: (id, builder taking the test's base directory, expected message fragment)
CORPUS: list[tuple[str, Callable[[Path], bytes], str]] = [
    (
        "traversal",
        lambda base: tars.build([file("index.html"), file(CLIMB + "escaped-traversal")]),
        f"archive member '{CLIMB}escaped-traversal': '..' is not allowed in member names",
    ),
    (
        "traversal-inside-name",
        lambda base: tars.build([file("a/b/../../../escaped")]),
        "archive member 'a/b/../../../escaped': '..' is not allowed",
    ),
    (
        "absolute",
        lambda base: tars.build([file(absolute_target(base))]),
        "absolute member names are not allowed",
    ),
    (
        "sibling-report",
        lambda base: tars.build([file(f"../{GRACEID}_llo_10/index.html", "pwned")]),
        f"archive member '../{GRACEID}_llo_10/index.html': '..' is not allowed",
    ),
    (
        "symlink-absolute",
        lambda base: tars.build([symlink("passwd", "/etc/passwd")]),
        "archive member 'passwd': symbolic link to an absolute path",
    ),
    (
        "symlink-escape",
        lambda base: tars.build([symlink("up", "../../..")]),
        "archive member 'up': symbolic link points outside the report",
    ),
    (
        "symlink-to-sibling",
        lambda base: tars.build([symlink("sibling", f"../{GRACEID}_llo_10")]),
        "archive member 'sibling': symbolic link points outside the report",
    ),
    (
        "symlink-then-write-through",
        lambda base: tars.build([symlink("dir", "tier1"), file("dir/x.txt")]),
        "archive member 'dir/x.txt': its parent 'dir' is a symbolic link in this archive",
    ),
    (
        "symlink-chain",
        lambda base: tars.build([symlink("a", "."), symlink("b", "a/a/a/a/../../../..")]),
        "archive member 'b': symbolic link 'a/a/a/a/../../../..' resolves through another",
    ),
    (
        "cve-2025-4517-chain",
        lambda base: cve_2025_4517_chain(),
        "is a symbolic link in this archive",
    ),
    (
        "hardlink-escape",
        lambda base: tars.build([hardlink("passwd", "/etc/passwd")]),
        "archive member 'passwd': hard links are not allowed",
    ),
    (
        "hardlink-inside",
        lambda base: tars.build([file("index.html"), hardlink("copy.html", "index.html")]),
        "archive member 'copy.html': hard links are not allowed",
    ),
    (
        "char-device",
        lambda base: tars.build([special("null", "chr")]),
        "archive member 'null': device nodes are not allowed",
    ),
    (
        "block-device",
        lambda base: tars.build([special("disk", "blk")]),
        "archive member 'disk': device nodes are not allowed",
    ),
    (
        "fifo",
        lambda base: tars.build([file("index.html"), special("pipe", "fifo")]),
        "archive member 'pipe': FIFOs are not allowed",
    ),
    (
        "hidden-file",
        lambda base: tars.build([file("index.html"), file("tier1/.htaccess", "Options +Indexes")]),
        "archive member 'tier1/.htaccess': names may not start with '.'",
    ),
    (
        "file-then-directory",
        lambda base: tars.build([file("x", "1"), file("x/y", "2")]),
        "archive member 'x/y': its parent 'x' is a file in this archive",
    ),
    (
        "directory-over-report-file",
        lambda base: tars.build([file("index.html/inner.html")]),
        "archive: 'index.html': the report has a file here, not a directory",
    ),
    (
        "ten-times-the-member-limit",
        lambda base: tars.many_members(10 * MEMBERS),
        f"the archive has more than {MEMBERS} members (limit tar_max_members)",
    ),
    (
        "compression-bomb",
        lambda base: tars.compression_bomb(),
        "archive member 'bomb.bin': the archive expands more than 200 times",
    ),
    (
        "long-header-bomb",
        lambda base: tars.long_header_bomb(),
        "archive: an extended header at offset 0 claims 67108864 bytes",
    ),
    (
        "not-a-tar",
        lambda base: tars.random_bytes(10_000),
        "archive: not a readable tar archive",
    ),
    (
        "truncated-gzip",
        lambda base: tars.report_tree({"index.html": os.urandom(50_000)}, "gz")[:20_000],
        "archive: not a readable tar archive",
    ),
    (
        "empty",
        lambda base: tars.build([directory("tier1")]),
        "archive: the archive contains no files",
    ),
]


@pytest.mark.parametrize(
    ("build", "message"), [(b, m) for _, b, m in CORPUS], ids=[c[0] for c in CORPUS]
)
def test_hostile_archive_is_refused_and_changes_nothing(
    hostile_server: LiveServer, build: Callable[[Path], bytes], message: str
) -> None:
    base = hostile_server.data_dir.parent
    payload = build(base)
    before_tree, before_rows = snapshot(base), rows(hostile_server.data_dir)

    sent = send(hostile_server.url, payload, tar_metadata())

    assert sent.final.status_code == 422, sent.final.text
    assert message in sent.final.text, sent.final.text
    assert "nothing was published" in sent.final.text
    assert snapshot(base) == before_tree
    assert rows(hostile_server.data_dir) == before_rows
    state, error = upload_state(hostile_server.data_dir, sent.upload_id)
    assert state == "failed" and error is not None and message in error
    work = hostile_server.data_dir / "reports/O4/.dqrxfer-staging/work"
    assert list(work.iterdir()) == []
    assert not (base / "escaped-traversal").exists()
    assert not Path(absolute_target(base)).exists()


def test_a_refusal_stands_when_the_last_patch_is_resent(hostile_server: LiveServer) -> None:
    base = hostile_server.data_dir.parent
    payload = tars.build([symlink("passwd", "/etc/passwd")])
    sent = send(hostile_server.url, payload, tar_metadata())
    assert sent.final.status_code == 422
    before_tree, before_rows = snapshot(base), rows(hostile_server.data_dir)

    again = resend_last_patch(hostile_server.url, sent, len(payload))

    assert again.status_code == 422 and again.text == sent.final.text  # the same answer
    assert snapshot(base) == before_tree and rows(hostile_server.data_dir) == before_rows
    state, error = upload_state(hostile_server.data_dir, sent.upload_id)
    assert state == "failed" and error is not None and "symbolic link" in error


def test_bytes_limit_from_the_project_configuration(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "server.toml"
    config.write_text(
        f'data_dir = "{data}"\nauto_upgrade = true\nserve_reports = true\n'
        f"tar_max_bytes = 1048576\n"
        f'[projects.O4]\nreports_root = "{data / "reports/O4"}"\nurl = "/reports/O4/"\n'
        f"tar_max_members = 3\n"
    )
    server = LiveServer(data, config=config).start()
    try:
        big = tars.report_tree({"a.bin": os.urandom(700_000), "b.bin": os.urandom(700_000)})
        sent = send(server.url, big, tar_metadata())
        assert sent.final.status_code == 422
        assert (
            "archive member './b.bin': the files add up to more than 1048576 bytes "
            "(limit tar_max_bytes)" in sent.final.text
        )
        crowded = tars.build([file(f"f{index}") for index in range(4)])
        sent = send(server.url, crowded, tar_metadata())
        assert sent.final.status_code == 422
        assert "archive member 'f3': the archive has more than 3 members" in sent.final.text
        assert not (data / "reports/O4/S230518h_dir").exists()
    finally:
        server.discard()
