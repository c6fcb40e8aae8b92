"""dqr-batch-upload: finding report directories in a tree, asking the server
which it has, uploading the rest (real server, real CLI processes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from dqrxfer.batch import find_reports
from support.cli import run_cli
from support.live import LiveServer
from support.tus import dqr_upload_command

REPORTS = (
    ("S230518h", "llo", 1),
    ("S230518h", "lho", 2),
    ("GW230518A", "virgo", 1),
)


def make_report(root: Path, graceid: str, site: str, revision: int) -> Path:
    report = root / f"{graceid}_dir" / f"{graceid}_{site}_{revision}"
    (report / "tier1").mkdir(parents=True)
    (report / "index.html").write_text(f"<html>{graceid} {site} {revision}</html>")
    (report / "tier1" / "data.json").write_bytes(os.urandom(50_000))
    return report


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "public_html" / "O4"
    for graceid, site, revision in REPORTS:
        make_report(root, graceid, site, revision)
    return root


@pytest.fixture
def client_env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(tmp_path)}


def batch_command(server: LiveServer, *args: str) -> list[str]:
    """``dqr-batch-upload`` of project O4 to ``server``, ``args`` after."""
    return ["dqr-batch-upload", "-s", server.url, "-p", "O4", *args]


def test_find_reports_knows_report_directories_by_name(tree: Path) -> None:
    # Look-alikes that are not reports:
    (tree / "S230518h_dir" / "notes").mkdir()
    (tree / "S230518h_dir" / "S230518h_geo_1").mkdir()  # not a site
    (tree / "other_dir" / "S230518h_llo_7").mkdir(parents=True)  # wrong event directory
    (tree / "S230518h_llo_3").mkdir()  # not inside an event directory
    nested = tree / "S230518h_dir" / "S230518h_llo_1" / "S230518h_dir" / "S230518h_llo_9"
    nested.mkdir(parents=True)  # inside a report: part of that report, not another one
    found = find_reports([tree.parent])
    assert [(r.graceid, r.site, r.revision) for r in found] == sorted(REPORTS)
    # A root may be an event or a report directory itself.
    report = tree / "GW230518A_dir" / "GW230518A_virgo_1"
    assert [r.path for r in find_reports([report])] == [report]
    assert len(find_reports([tree / "S230518h_dir"])) == 2


def table_rows(stdout: str) -> dict[tuple[str, str, str], str]:
    rows = {}
    for line in stdout.splitlines()[1:-1]:
        graceid, site, revision, *rest = line.split()
        status = "on server" if rest[:2] == ["on", "server"] else rest[0]
        if rest[:2] == ["would", "upload"]:
            status = "would upload"
        rows[(graceid, site, revision)] = status
    return rows


def test_batch_uploads_what_the_server_lacks_and_skips_the_rest(
    live_server: LiveServer, tree: Path, client_env: dict[str, str]
) -> None:
    first = tree / "S230518h_dir" / "S230518h_llo_1"
    done = run_cli(
        *dqr_upload_command(live_server.url, str(first)),
        env=client_env,
    )
    assert done.returncode == 0, done.stderr

    dry = run_cli(*batch_command(live_server, "--dry-run", str(tree)), env=client_env)
    assert dry.returncode == 0, dry.stderr
    assert table_rows(dry.stdout) == {
        ("GW230518A", "virgo", "1"): "would upload",
        ("S230518h", "lho", "2"): "would upload",
        ("S230518h", "llo", "1"): "on server",
    }
    assert not live_server.published(graceid="GW230518A", site="virgo", revision=1).exists()

    result = run_cli(*batch_command(live_server, "--jobs", "2", str(tree)), env=client_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split() == [
        "graceid",
        "site",
        "rev",
        "status",
        "size",
        "time",
        "url",
        "/",
        "error",
    ]
    assert table_rows(result.stdout) == {
        ("GW230518A", "virgo", "1"): "uploaded",
        ("S230518h", "lho", "2"): "uploaded",
        ("S230518h", "llo", "1"): "on server",
    }
    assert result.stdout.splitlines()[-1] == "3 report(s): 1 on server, 2 uploaded"
    assert "INFO:dqr-xfer:3 report(s) found, 1 already on the server, 2 to upload" in result.stderr
    for graceid, site, revision in REPORTS:
        local = tree / f"{graceid}_dir" / f"{graceid}_{site}_{revision}"
        remote = live_server.published(graceid=graceid, site=site, revision=revision)
        for name in ("index.html", "tier1/data.json"):
            assert (remote / name).read_bytes() == (local / name).read_bytes()
    links = requests.get(f"{live_server.url}/api/v1/events/GW230518A/reports", timeout=10).json()
    url = links["reports"][0]["url"]
    assert url in result.stdout

    again = run_cli(*batch_command(live_server, str(tree)), env=client_env)
    assert again.returncode == 0, again.stderr
    assert set(table_rows(again.stdout).values()) == {"on server"}


def test_update_resends_reports_that_changed_locally(
    live_server: LiveServer, tree: Path, client_env: dict[str, str]
) -> None:
    command = batch_command(live_server, str(tree))
    assert run_cli(*command, env=client_env).returncode == 0
    report = tree / "S230518h_dir" / "S230518h_lho_2"
    (report / "tier1" / "late.png").write_bytes(os.urandom(10_000))
    plain = run_cli(*command, env=client_env)
    assert set(table_rows(plain.stdout).values()) == {"on server"}
    updated = run_cli(*command, "--update", env=client_env)
    assert updated.returncode == 0, updated.stderr
    assert table_rows(updated.stdout)[("S230518h", "lho", "2")] == "uploaded"
    assert table_rows(updated.stdout)[("S230518h", "llo", "1")] == "on server"
    late = live_server.published(graceid="S230518h", site="lho", revision=2) / "tier1" / "late.png"
    assert late.read_bytes() == (report / "tier1" / "late.png").read_bytes()


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_a_project_the_server_lacks_stops_the_batch_with_one_line_and_exit_2(
    jobs: str, live_server: LiveServer, tree: Path, client_env: dict[str, str]
) -> None:
    """The first refusal of the project ends the batch: every other report
    would be refused alike, so one line (as dqr-upload's) says it."""
    result = run_cli(
        "dqr-batch-upload", "-s", live_server.url, "-p", "O5", "--jobs", jobs, str(tree),
        env=client_env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr  # a usage error, as for dqr-upload
    assert [line for line in result.stderr.splitlines() if line.startswith("ERROR:")] == [
        "ERROR:dqr-xfer:project 'O5': the server has no such project "
        "(it has MDC, O4, personal, replay)"
    ]
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    # Nothing reached the server, nothing is left to resume.
    assert not (live_server.data_dir / "reports").exists() or not any(
        path.is_file() for path in (live_server.data_dir / "reports").rglob("*")
    )
    uploads = live_server.data_dir / "uploads"
    assert not any(path.is_file() for path in uploads.iterdir()) if uploads.exists() else True
    resume = Path(client_env["XDG_CACHE_HOME"]) / "dqrxfer" / "uploads"
    assert not resume.exists() or not list(resume.glob("*.json"))
    # The reports are as they were.
    assert len(find_reports([tree])) == len(REPORTS)


def test_no_reports_is_a_usage_error(tmp_path: Path, client_env: dict[str, str]) -> None:
    result = run_cli(
        "dqr-batch-upload", "-s", "http://127.0.0.1:9", "-p", "O4", str(tmp_path), env=client_env
    )
    assert result.returncode == 2
    assert "no report directories" in result.stderr
