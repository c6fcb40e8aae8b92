"""Uploading a report again: dqr-upload and dqr-batch-upload compare the local
files with the server's copy (links API, ``files=1``) and send only what is
new or different; ``--dry-run`` asks the server what it takes.  Real server
(its access log names every tus request with its length), real CLIs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import requests

from support.cli import run_cli
from support.live import LiveServer
from support.request_log import Request, requests_of
from support.tus import dqr_upload_command

REPORT = "S230518h_llo_1"


class Sent:
    """The tus requests a server took since this was made."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.before = len(requests_of(server.log()))

    def requests(self) -> list[Request]:
        return [
            request
            for request in requests_of(self.server.log())[self.before :]
            if request.path.startswith("/files") and request.method in ("POST", "PATCH", "DELETE")
        ]

    def count(self, method: str, status: int | None = None) -> int:
        return sum(
            1
            for request in self.requests()
            if request.method == method and status in (None, request.status)
        )

    @property
    def creations(self) -> int:
        """Uploads created and kept.  dqr-upload creates its first upload
        while it asks for the server's copy, and terminates it (DELETE) when
        the server may have the files (see dqrxfer.gate): such an upload
        carries no byte and is not counted."""
        return self.count("POST") - self.count("DELETE", 204)

    @property
    def made_in_advance(self) -> int:
        """Uploads created, then terminated without a byte."""
        return self.count("DELETE", 204)

    @property
    def body_bytes(self) -> int:
        return sum(request.length or 0 for request in self.requests())


def make_report(root: Path) -> Path:
    report = root / "S230518h_dir" / REPORT
    (report / "tier1").mkdir(parents=True)
    (report / "index.html").write_text("<html>llo 1</html>")
    (report / "tier1" / "data.json").write_bytes(os.urandom(50_000))
    (report / "tier1" / "big.bin").write_bytes(os.urandom(2_000_000))
    return report


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def server_files(server: LiveServer, site: str = "llo") -> dict[str, tuple[int, str]]:
    answer = requests.get(
        f"{server.url}/api/v1/events/S230518h/reports",
        params={"files": "1", "site": site},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    (report,) = answer.json()["reports"]
    return {file["path"]: (file["size"], file["sha256"]) for file in report["files"]}


def local_files(report: Path) -> dict[str, tuple[int, str]]:
    return {
        path.relative_to(report).as_posix(): (path.stat().st_size, sha256(path))
        for path in sorted(report.rglob("*"))
        if path.is_file()
    }


def upload(
    server: LiveServer, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(*dqr_upload_command(server.url, *extra), env=env)


def test_upload_again_sends_only_new_and_changed_files(
    logged_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    report = make_report(tmp_path / "tree")
    first = upload(logged_server, client_env, str(report))
    assert first.returncode == 0, first.stderr
    # The links API lists each file with its size and sha256.
    assert server_files(logged_server) == local_files(report)
    url = first.stdout.strip()

    # Nothing changed: nothing is sent, the report's URL is printed as before.
    sent = Sent(logged_server)
    same = upload(logged_server, client_env, str(report))
    assert same.returncode == 0, same.stderr
    assert f"INFO:dqr-xfer:{REPORT}: skipped 3 files already on the server" in same.stderr
    assert "WARNING" not in same.stderr
    assert same.stdout.strip() == url
    assert sent.creations == 0 and sent.body_bytes == 0
    assert sent.made_in_advance <= 1  # created with the comparison, then terminated

    # One file changed, one new: only those two travel (not the 2 MB one).
    (report / "tier1" / "data.json").write_bytes(os.urandom(50_010))
    (report / "notes.txt").write_text("late notes\n")
    sent = Sent(logged_server)
    again = upload(logged_server, client_env, str(report))
    assert again.returncode == 0, again.stderr
    assert f"INFO:dqr-xfer:{REPORT}: skipped 2 files already on the server" in again.stderr
    warnings = [line for line in again.stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == [
        f"WARNING:dqr-xfer:{REPORT}/tier1/data.json: replacing the server's copy "
        "(50000 bytes) with a different one (50010 bytes)"
    ]
    assert again.stdout.strip() == url
    assert sent.creations == 1
    assert 50_010 < sent.body_bytes < 100_000
    assert server_files(logged_server) == local_files(report)  # nothing lost, all current
    for name, _ in local_files(report).items():
        assert (logged_server.published(name)).read_bytes() == (report / name).read_bytes()


def test_a_plain_file_already_there_is_skipped_unless_forced(
    logged_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    payload = tmp_path / "data.bin"
    payload.write_bytes(os.urandom(300_000))
    assert upload(logged_server, client_env, str(payload)).returncode == 0

    sent = Sent(logged_server)
    skipped = upload(logged_server, client_env, str(payload))
    assert skipped.returncode == 0, skipped.stderr
    assert f"{REPORT}: skipped 1 file already on the server" in skipped.stderr
    assert skipped.stdout.strip().endswith(f"/reports/O4/S230518h_dir/{REPORT}/")
    assert sent.creations == 0

    forced = upload(logged_server, client_env, "--force", str(payload))
    assert forced.returncode == 0, forced.stderr
    assert "skipped" not in forced.stderr
    assert sent.creations == 1 and sent.body_bytes >= 300_000
    assert logged_server.published("data.bin").read_bytes() == payload.read_bytes()


def test_dry_run_asks_the_server_what_it_takes_and_has(
    logged_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    report = make_report(tmp_path / "tree")
    sent = Sent(logged_server)
    # (dqr_upload_command puts -p O4 first; a later -p wins)
    wrong = run_cli(
        *dqr_upload_command(logged_server.url, "-p", "O5", "--dry-run", str(report)),
        env=client_env,
    )
    assert wrong.returncode == 2, wrong.stderr
    assert (
        f"ERROR:dqr-xfer:--project: {logged_server.url} has no project 'O5' "
        "(its projects: replay, MDC, O4, personal)"
    ) in wrong.stderr
    assert "Would upload" not in wrong.stderr and "Traceback" not in wrong.stderr
    assert sent.creations == 0

    fresh = upload(logged_server, client_env, "--dry-run", str(report))
    assert fresh.returncode == 0, fresh.stderr
    assert f"Would upload {report} as kind=tar" in fresh.stderr

    assert upload(logged_server, client_env, str(report)).returncode == 0
    (report / "tier1" / "data.json").write_bytes(os.urandom(40_000))
    sent = Sent(logged_server)
    dry = upload(logged_server, client_env, "--dry-run", str(report))
    assert dry.returncode == 0, dry.stderr
    assert f"INFO:dqr-xfer:{REPORT}: would skip 2 files already on the server" in dry.stderr
    assert (
        f"WARNING:dqr-xfer:{REPORT}/tier1/data.json: would replace the server's copy "
        "(50000 bytes) with a different one (40000 bytes)"
    ) in dry.stderr
    assert sent.creations == 0
    assert logged_server.published("tier1/data.json").stat().st_size == 50_000


# -- dqr-batch-upload --------------------------------------------------------

BATCH = ("S230518h_llo_1", "S230518h_lho_2", "S230518h_virgo_1")


def make_tree(root: Path) -> Path:
    for name in BATCH:
        report = root / "S230518h_dir" / name
        (report / "tier1").mkdir(parents=True)
        (report / "index.html").write_text(f"<html>{name}</html>")
        (report / "tier1" / "data.json").write_bytes(os.urandom(200_000))
    return root


def statuses(stdout: str) -> dict[str, str]:
    """Report name -> the status cell of the summary table."""
    rows = {}
    for line in stdout.splitlines()[1:-1]:
        graceid, site, revision, rest = line.split(maxsplit=3)
        rows[f"{graceid}_{site}_{revision}"] = rest.split("  ")[0]
    return rows


def test_batch_update_sends_what_differs_and_settles(
    logged_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    tree = make_tree(tmp_path / "O4")
    command = ["dqr-batch-upload", "-s", logged_server.url, "-p", "O4", str(tree)]
    assert run_cli(*command, env=client_env).returncode == 0
    # The server's copy of llo has a file the local one lacks (sent from elsewhere).
    extra = tmp_path / "extra.txt"
    extra.write_text("added on another host\n")
    assert upload(logged_server, client_env, str(extra)).returncode == 0
    # The local lho has a new file and a changed one.
    lho = tree / "S230518h_dir" / "S230518h_lho_2"
    (lho / "tier1" / "late.png").write_bytes(os.urandom(10_000))
    (lho / "index.html").write_text("<html>S230518h_lho_2, revised</html>")

    sent = Sent(logged_server)
    plain = run_cli(*command, env=client_env)
    assert plain.returncode == 0, plain.stderr
    assert statuses(plain.stdout) == {
        "S230518h_llo_1": "on server",
        "S230518h_lho_2": "on server (differs locally: 2 files; --update to send)",
        "S230518h_virgo_1": "on server",
    }
    assert plain.stdout.splitlines()[-1] == "3 report(s): 3 on server"
    assert sent.creations == 0

    updated = run_cli(*command, "--update", env=client_env)
    assert updated.returncode == 0, updated.stderr
    assert statuses(updated.stdout) == {
        "S230518h_llo_1": "on server",
        "S230518h_lho_2": "uploaded",
        "S230518h_virgo_1": "on server",
    }
    assert "INFO:dqr-xfer:S230518h_lho_2: skipped 1 file already on the server" in updated.stderr
    assert [line for line in updated.stderr.splitlines() if line.startswith("WARNING")] == [
        "WARNING:dqr-xfer:S230518h_lho_2/index.html: replacing the server's copy "
        f"({len('<html>S230518h_lho_2</html>')} bytes) with a different one "
        f"({len('<html>S230518h_lho_2, revised</html>')} bytes)"
    ]
    assert sent.creations == 1  # one archive: the new and the changed file only
    assert 10_000 < sent.body_bytes < 200_000
    published = logged_server.published(site="lho", revision=2)
    for name in ("index.html", "tier1/data.json", "tier1/late.png"):
        assert (published / name).read_bytes() == (lho / name).read_bytes()
    # The llo report was not sent again, and its extra file is still there.
    assert logged_server.published("extra.txt").read_text() == "added on another host\n"

    sent = Sent(logged_server)
    settled = run_cli(*command, "--update", env=client_env)
    assert settled.returncode == 0, settled.stderr
    assert set(statuses(settled.stdout).values()) == {"on server"}
    assert "skipped" not in settled.stderr and "WARNING" not in settled.stderr
    assert sent.creations == 0 and sent.body_bytes == 0

    # A local copy emptied since is no reason to send (or lose) anything.
    virgo = tree / "S230518h_dir" / "S230518h_virgo_1"
    for path in (virgo / "index.html", virgo / "tier1" / "data.json"):
        path.unlink()
    emptied = run_cli(*command, "--update", env=client_env)
    assert emptied.returncode == 0, emptied.stderr
    assert set(statuses(emptied.stdout).values()) == {"on server"}
    assert (
        f"WARNING:dqr-xfer:{virgo}: not compared with the server's copy: "
        f"{virgo}: no files to upload in this directory"
    ) in emptied.stderr
    assert sent.creations == 0
    assert logged_server.published("index.html", site="virgo").exists()


def test_batch_dry_run_refuses_a_project_the_server_lacks(
    logged_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    tree = make_tree(tmp_path / "O4")
    command = ["dqr-batch-upload", "-s", logged_server.url, "--dry-run", str(tree)]
    wrong = run_cli(*command, "-p", "O5", env=client_env)
    assert wrong.returncode == 2, wrong.stderr
    assert f"--project: {logged_server.url} has no project 'O5'" in wrong.stderr
    right = run_cli(*command, "-p", "O4", env=client_env)
    assert right.returncode == 0, right.stderr
    assert set(statuses(right.stdout).values()) == {"would upload"}
    assert not logged_server.published(site="lho", revision=2).exists()


def test_dry_run_refuses_a_site_the_server_does_not_know(
    tmp_path: Path, client_env: dict[str, str]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = tmp_path / "server.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\nauto_upgrade = true\nserve_reports = true\n'
        'sites = ["llo", "lho", "virgo"]\n'
    )
    server = LiveServer(data_dir, config=config).start()
    try:
        report = make_report(tmp_path / "tree")
        result = run_cli(
            *dqr_upload_command(server.url, "--dry-run", str(report), site="kagra"),
            env=client_env,
        )
    finally:
        server.discard()
    assert result.returncode == 2, result.stderr
    assert (
        f"ERROR:dqr-xfer:--uploader: {server.url} knows no site 'kagra' "
        "(its sites: llo, lho, virgo)"
    ) in result.stderr
    assert "Would upload" not in result.stderr and "Traceback" not in result.stderr


def test_digests_are_remembered_while_the_file_stays_as_it_was(
    logged_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    """A file whose size, modification time and inode are as when it was
    hashed is not read again (the hash cache); any change of those is."""
    report = make_report(tmp_path / "tree")
    an_hour_ago = time.time_ns() - 3600 * 10**9
    for path in report.rglob("*"):
        os.utime(path, ns=(an_hour_ago, an_hour_ago))
    assert upload(logged_server, client_env, str(report)).returncode == 0
    first = upload(logged_server, client_env, str(report))  # hashes, remembers
    assert f"{REPORT}: skipped 3 files already on the server" in first.stderr
    assert list((tmp_path / "cache" / "dqrxfer").glob("hashes.sqlite"))

    data = report / "tier1" / "data.json"
    data.write_bytes(os.urandom(50_000))  # same size, same inode ...
    os.utime(data, ns=(an_hour_ago, an_hour_ago))  # ... same time: taken as unchanged
    sent = Sent(logged_server)
    remembered = upload(logged_server, client_env, "-v", str(report))
    assert remembered.returncode == 0, remembered.stderr
    assert f"sha256 of {data} from the hash cache" in remembered.stderr
    assert f"{REPORT}: skipped 3 files already on the server" in remembered.stderr
    assert sent.creations == 0

    os.utime(data)  # now: hashed again, found different, sent
    changed = upload(logged_server, client_env, str(report))
    assert changed.returncode == 0, changed.stderr
    assert f"{REPORT}: skipped 2 files already on the server" in changed.stderr
    assert f"{REPORT}/tier1/data.json: replacing the server's copy" in changed.stderr
    assert sent.creations == 1
    assert logged_server.published("tier1/data.json").read_bytes() == data.read_bytes()
