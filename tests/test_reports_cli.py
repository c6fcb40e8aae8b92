"""Operator commands for reports: ``reports list``, ``reports show``,
``reports register``, ``reindex`` and the staging part of ``cleanup``.

Their ``main`` runs in the test's process (``support.cli.run_in_process``,
which ``tests/test_cli_in_process.py`` holds to what the process gives) against
a live server's data directory; the documented examples run as processes in
``tests/test_docs_examples.py``."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from pathlib import Path

import requests
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from dqrxfer.server.db import Report, ReportFile
from support import tars
from support.cli import run_in_process
from support.live import LiveServer
from support.tus import send, tar_metadata

O4 = Path("reports/O4")


def cli(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = run_in_process("dqrxfer-server", *args, "--data-dir", str(data_dir))
    return result.returncode, result.stdout, result.stderr


def register(data_dir: Path, path: Path, **options: str) -> tuple[int, str, str]:
    """``reports register --path path`` with ``--<name> <value>`` for each of
    ``options`` (project, graceid, site, revision, subdir) before it."""
    flags = [item for name, value in options.items() for item in (f"--{name}", value)]
    return cli(data_dir, "reports", "register", *flags, "--path", str(path))


def rows(data_dir: Path) -> dict[str, dict[str, tuple[int, str | None]]]:
    engine = create_engine(f"sqlite:///{data_dir / 'dqrxfer.sqlite'}")
    with Session(engine) as session:
        found: dict[str, dict[str, tuple[int, str | None]]] = {}
        for report in session.scalars(select(Report)):
            found[report.path] = {
                row.relpath: (row.size, row.sha256)
                for row in session.scalars(
                    select(ReportFile).where(ReportFile.report_id == report.id)
                )
            }
    engine.dispose()
    return found


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish_three_reports(server: LiveServer) -> None:
    """Upload S230518h_llo_1, S230518h_virgo_2 and G123456_lho_1 (an index
    page and tier1/a.json each) and see each published."""
    for graceid, site, revision in (
        ("S230518h", "llo", 1),
        ("S230518h", "virgo", 2),
        ("G123456", "lho", 1),
    ):
        payload = tars.report_tree({"index.html": f"{graceid} {site}", "tier1/a.json": "{}"})
        sent = send(
            server.url,
            payload,
            tar_metadata(graceid=graceid, uploader=site, revision=revision),
        )
        assert sent.final.status_code == 204, sent.final.text


def test_list_and_show(live_server: LiveServer) -> None:
    publish_three_reports(live_server)
    data = live_server.data_dir

    status, out, _ = cli(data, "reports", "list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "graceid",
        "site",
        "revision",
        "project",
        "file_count",
        "bytes",
        "updated",
        "path",
    ]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["G123456", "lho", "1"],
        ["S230518h", "virgo", "2"],
        ["S230518h", "llo", "1"],
    ]
    status, out, _ = cli(
        data, "reports", "list", "--graceid", "S230518h", "--site", "VIRGO", "--json"
    )
    listed = json.loads(out)
    assert [(r["graceid"], r["site"], r["revision"], r["file_count"]) for r in listed] == [
        ("S230518h", "virgo", 2, 2)
    ]
    status, out, _ = cli(data, "reports", "list", "--project", "O4", "--since", "1h", "--json")
    assert len(json.loads(out)) == 3
    status, out, err = cli(data, "reports", "list", "--since", "2999-01-01")
    assert status == 0 and out == "" and "no reports" in err
    status, _, err = cli(data, "reports", "list", "--since", "yesterday")
    assert status == 2 and "--since: 'yesterday' is neither a date/time" in err

    status, out, _ = cli(data, "reports", "show", "S230518h_llo_1", "--json")
    shown = json.loads(out)
    assert shown["path"] == "S230518h_dir/S230518h_llo_1" and shown["file_count"] == 2
    assert [(f["path"], f["sha256"]) for f in shown["files"]] == [
        ("index.html", sha(b"S230518h llo")),
        ("tier1/a.json", sha(b"{}")),
    ]
    status, out, _ = cli(data, "reports", "show", "S230518h_llo_1")
    assert status == 0 and "url: /reports/O4/S230518h_dir/S230518h_llo_1/" in out
    assert sha(b"{}") in out
    status, out, err = cli(data, "reports", "show", "S230518h")  # a graceid: the event's reports
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["graceid", "site", "revision"]
    assert sorted(line.split()[:3] for line in lines[1:]) == [
        ["S230518h", "llo", "1"],
        ["S230518h", "virgo", "2"],
    ]
    status, out, _ = cli(data, "reports", "show", "S230518h", "--project", "O4", "--json")
    assert sorted((r["site"], r["file_count"]) for r in json.loads(out)) == [
        ("llo", 2),
        ("virgo", 2),
    ]
    status, out, err = cli(data, "reports", "show", "S230101a")
    assert (status, out) == (1, "")
    assert err == "dqrxfer-server: S230101a: no reports of this event\n"
    status, _, err = cli(data, "reports", "show", "S230518h", "--project", "MDC")
    assert status == 1 and "S230518h: no reports of this event in project MDC" in err
    status, _, err = cli(data, "reports", "show", "S230518h_llo_7")
    assert status == 1 and "S230518h_llo_7: no such report" in err
    status, _, err = cli(data, "reports", "show", "nonsense")
    assert status == 2 and "report directory: must be named <graceid>_<site>_<revision>" in err
    assert "or a graceid (S230518h) for the event's reports" in err


def test_register_publishes_a_directory_produced_here(
    live_server: LiveServer, tmp_path: Path
) -> None:
    source = tmp_path / "made-at-cit"
    (source / "tier1").mkdir(parents=True)
    (source / "index.html").write_text("<html>cit</html>")
    (source / "tier1/data.json").write_text('{"cit": true}')
    data = live_server.data_dir

    status, out, err = register(
        data, source, project="O4", graceid="S230518h", site="LHO", revision="3"
    )

    assert status == 0, err
    assert out.strip() == "published: 2 file(s); report /reports/O4/S230518h_dir/S230518h_lho_3/"
    report = data / O4 / "S230518h_dir/S230518h_lho_3"
    assert (report / "tier1/data.json").read_text() == '{"cit": true}'
    assert rows(data)["S230518h_dir/S230518h_lho_3"] == {
        "index.html": (16, sha(b"<html>cit</html>")),
        "tier1/data.json": (13, sha(b'{"cit": true}')),
    }
    # Registered files came with no upload: the table shows '-', not 'None'.
    status, out, err = cli(data, "reports", "show", "S230518h_lho_3")
    assert status == 0, err
    assert "None" not in out
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["path", "size", "sha256", "upload", "principal", "published"]
    assert [line.split()[:4] for line in table[1:]] == [
        ["index.html", "16", sha(b"<html>cit</html>"), "-"],
        ["tier1/data.json", "13", sha(b'{"cit": true}'), "-"],
    ]
    served = requests.get(f"{live_server.url}/reports/O4/S230518h_dir/S230518h_lho_3/", timeout=10)
    assert served.text == "<html>cit</html>"
    links = requests.get(f"{live_server.url}/api/v1/events/S230518h/reports", timeout=10).json()
    assert [(r["site"], r["revision"]) for r in links["reports"]] == [("lho", 3)]


def test_register_in_place_and_refusals(live_server: LiveServer, tmp_path: Path) -> None:
    data = live_server.data_dir
    in_place = data / O4 / "S230601a_dir/S230601a_llo_1"
    in_place.mkdir(parents=True)
    (in_place / "index.html").write_text("made in place")

    status, out, err = register(
        data, in_place, project="o4", graceid="S230601a", site="llo", revision="1"
    )
    assert status == 0, err
    assert out.startswith("indexed in place: 1 file(s)")
    assert rows(data)["S230601a_dir/S230601a_llo_1"] == {"index.html": (13, sha(b"made in place"))}

    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "index.html").write_text("x")
    (hostile / "passwd").symlink_to("/etc/passwd")
    status, _, err = register(
        data, hostile, project="O4", graceid="S230601a", site="llo", revision="2"
    )
    assert status == 1
    assert (
        "entry 'passwd': symbolic link to an absolute path ('/etc/passwd'); nothing was published"
        in err
    )
    assert not (data / O4 / "S230601a_dir/S230601a_llo_2").exists()

    status, _, err = register(data, hostile, graceid="S230601a", site="llo", revision="2")
    assert status == 2 and "--project: required (one of MDC, O4, personal, replay)" in err
    status, _, err = register(data, hostile, project="O4", graceid="S23", site="llo", revision="2")
    assert status == 2 and "--graceid: must be" in err
    for option, value, message in (
        ("--site", "L1", "--site: must be one of kagra, lho, llo, virgo (got 'L1')"),
        ("--revision", "one", "--revision: must be a non-negative integer"),
        ("--project", "O5", "--project: must be one of MDC, O4, personal, replay (got 'O5')"),
        ("--subdir", "../up", "--subdir: "),
    ):
        arguments = {
            "project": "O4",
            "graceid": "S230601a",
            "site": "llo",
            "revision": "5",
            "subdir": "",
            option.removeprefix("--"): value,
        }
        status, out, err = register(data, hostile, **arguments)
        assert (status, out) == (2, ""), err
        assert err.startswith(f"dqrxfer-server: {message}"), err
        assert err.count("\n") == 1 and "uploader" not in err
    assert not (data / O4 / "S230601a_dir/S230601a_llo_5").exists()


def tree_state(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        path.relative_to(root).as_posix(): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file() and ".dqrxfer-staging" not in path.parts
    }


def test_reindex_adopts_an_existing_tree_without_changing_it(data_dir: Path) -> None:
    root = data_dir / O4
    files = {
        "S230518h_dir/S230518h_llo_1/index.html": b"<html>llo</html>",
        "S230518h_dir/S230518h_llo_1/tier1/data.json": b"{}",
        "S230518h_dir/S230518h_LHO_2/index.html": b"<html>legacy spelling</html>",
        "G123456_dir/G123456_virgo_0/index.html": b"virgo",
        "S230518h_dir/S230518h_llo_1/.htaccess": b"hidden: not indexed",
        "notes/readme.txt": b"not a report",
        "S230518h_dir/not-a-report/x": b"x",
    }
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    assert cli(data_dir, "db", "upgrade")[0] == 0
    before = tree_state(root)

    status, out, err = cli(data_dir, "reindex", "--dry-run")
    assert status == 0 and "would index: 3 new" in out and rows(data_dir) == {}

    status, out, err = cli(data_dir, "reindex")

    assert status == 0, err
    assert "indexed: 3 new, 0 updated, 0 unchanged report(s); 4 file(s) hashed" in out
    assert "skipped O4/notes: not named <graceid>_dir" in err
    assert "skipped O4/S230518h_dir/not-a-report: report directory: must be named" in err
    assert tree_state(root) == before
    assert rows(data_dir) == {
        "S230518h_dir/S230518h_llo_1": {
            "index.html": (16, sha(b"<html>llo</html>")),
            "tier1/data.json": (2, sha(b"{}")),
        },
        "S230518h_dir/S230518h_LHO_2": {"index.html": (28, sha(b"<html>legacy spelling</html>"))},
        "G123456_dir/G123456_virgo_0": {"index.html": (5, sha(b"virgo"))},
    }
    status, out, _ = cli(data_dir, "reports", "show", "S230518h_lho_2", "--json")
    assert json.loads(out)["url"] == "/reports/O4/S230518h_dir/S230518h_LHO_2/"

    status, out, _ = cli(data_dir, "reindex")
    assert "0 new, 0 updated, 3 unchanged report(s); 0 file(s) hashed" in out

    changed = root / "S230518h_dir/S230518h_llo_1/index.html"
    changed.write_bytes(b"<html>changed by hand</html>")
    later = time.time() + 5
    os.utime(changed, (later, later))
    (root / "S230518h_dir/S230518h_llo_1/tier1/data.json").unlink()
    status, out, _ = cli(data_dir, "reindex", "--project", "O4")
    assert "0 new, 1 updated, 2 unchanged report(s); 1 file(s) hashed, 1 row(s)" in out
    assert rows(data_dir)["S230518h_dir/S230518h_llo_1"] == {
        "index.html": (28, sha(b"<html>changed by hand</html>"))
    }


def test_cleanup_removes_only_dead_staging(data_dir: Path) -> None:
    work = data_dir / O4 / ".dqrxfer-staging/work"
    work.mkdir(parents=True)
    dead = work / "abc.111111"
    dead.mkdir()
    (dead / "extract").mkdir()
    (work / "abc.111111.lock").touch()
    alive = work / "def.222222"
    alive.mkdir()
    lock = open(work / "def.222222.lock", "w")  # noqa: SIM115 - held across the command
    fcntl.flock(lock, fcntl.LOCK_EX)
    old_orphan = work / "ghi.333333"
    old_orphan.mkdir()
    two_hours_ago = time.time() - 7200
    os.utime(old_orphan, (two_hours_ago, two_hours_ago))
    young_orphan = work / "jkl.444444"
    young_orphan.mkdir()
    assert cli(data_dir, "db", "upgrade")[0] == 0
    try:
        status, out, err = cli(data_dir, "cleanup", "--dry-run")
        assert status == 0, err
        assert f"would remove stale staging directory {dead}" in out and dead.exists()
        assert (
            "would remove: 0 expired uploads, 0 finished partial uploads, 0 finished uploads "
            in (out)
        )
        assert "past retention, 2 stale staging directories;" in out

        status, out, err = cli(data_dir, "cleanup")

        assert status == 0, err
        assert f"removed stale staging directory {dead}" in out
        assert f"removed stale staging directory {old_orphan}" in out
        assert "retention, 2 stale staging directories, 0 remains" in out
        assert not dead.exists() and not (work / "abc.111111.lock").exists()
        assert not old_orphan.exists()
        assert alive.exists() and young_orphan.exists()
    finally:
        lock.close()


COMMANDS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "operators" / "commands.md"


def console_examples(page: Path) -> dict[str, list[str]]:
    """The commands of a page's ``console`` blocks (without the ``$``), each
    with the output lines shown after it."""
    examples: dict[str, list[str]] = {}
    for block in re.findall(r"```console\n(.*?)```", page.read_text(), re.S):
        command = None
        for line in block.splitlines():
            if line.startswith("$ "):
                command = line[2:]
                examples[command] = []
            elif command is not None:
                examples[command].append(line)
    return examples


def output_shape(text: str) -> list[str]:
    """Output lines without what differs from run to run: times, digests,
    ids, numbers, the operator's name, the width of table columns."""
    shaped = []
    for line in text.splitlines():
        line = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", "<time>", line)
        line = re.sub(r"\b[0-9a-f]{64}\b", "<sha256>", line)
        line = re.sub(r"\b[0-9a-f]{32}\b", "<id>", line)
        line = re.sub(r"operator:\S+", "operator:<user>", line)
        line = re.sub(r"\b\d+\b", "<n>", line)
        shaped.append(" ".join(line.split()))
    return shaped


def test_the_documented_report_commands_print_what_the_page_shows(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """The examples of docs/operators/commands.md, run for real on the reports
    they show: the same lines, up to times, digests and sizes."""
    publish_three_reports(live_server)
    source = tmp_path / "S230518h_lho_3"
    (source / "tier1").mkdir(parents=True)
    (source / "index.html").write_text("x")
    (source / "tier1/d.json").write_text("{}")
    examples = console_examples(COMMANDS_PAGE)
    documented = [
        "dqrxfer-server reports list",
        "dqrxfer-server reports register --project O4 --graceid S230518h --site lho "
        "--revision 3 --path /home/detchar/cit/S230518h_lho_3",
        "dqrxfer-server reports show S230518h_lho_3",
        "dqrxfer-server reindex --dry-run",
    ]
    for command in documented:
        assert command in examples, f"{COMMANDS_PAGE.name} no longer shows {command!r}"
        arguments = command.split()[1:]
        arguments = [str(source) if "/home/detchar/" in arg else arg for arg in arguments]
        status, out, err = cli(live_server.data_dir, *arguments)
        assert status == 0, err
        assert output_shape(out) == output_shape("\n".join(examples[command])), command


def test_cleanup_dry_run_creates_nothing_in_a_data_directory_without_uploads(
    tmp_path: Path,
) -> None:
    """A data directory with its database but no uploads directory yet (no
    upload ever came): the dry run says what it would do and makes no
    directory, lock file or database file."""
    data_dir = tmp_path / "data"
    status, _, err = cli(data_dir, "db", "upgrade")
    assert status == 0, err
    before = sorted(data_dir.rglob("*"))
    assert data_dir / "uploads" not in before

    status, out, err = cli(data_dir, "cleanup", "--dry-run")

    assert status == 0, err
    assert out.splitlines()[-1].startswith("would remove: 0 expired uploads, "), out
    assert "not looked at (dry run)" in out and "Traceback" not in err
    assert sorted(data_dir.rglob("*")) == before
    # The real run makes what it needs.
    status, out, err = cli(data_dir, "cleanup")
    assert status == 0, err
    assert (data_dir / "uploads").is_dir()
