"""Every example output in docs/ is what the real command prints today.

Each example block (support.examples: ``console`` blocks' output, and every
block that is not code or configuration) is named here with the run that
reproduces it: the real command against a real server, under the names the
example uses (project O4, event S230518h, site llo, ...).  Every documented
line must match a line of that run, its variable parts (sizes, times, ids,
hosts, paths) left free; a JSON answer must have every key the example shows,
and the same strings where it shows them whole.  A new example block fails
until it is named here, so none can drift unchecked.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import signal
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from support.cli import run_cli
from support.examples import Example, examples, unmatched, unmatched_json
from support.faultproxy import FaultProxy, Faults
from support.kerberos import Realm
from support.live import LiveServer, free_port, tool
from support.tus import (
    create,
    patch,
    report_metadata,
    tar_metadata,
    wait_for,
)

MiB = 1024 * 1024
DOCS = Path(__file__).resolve().parents[1] / "docs"

#: A run: what it printed (text), or the JSON answer it got.
Run = Callable[["Context", Example], "str | object"]

#: The hosts the examples name for the server.
DOCUMENTED_SERVER = re.compile(r"https?://(?:dqr\.example\.org|127\.0\.0\.1:8080)")


class Context:
    """What a run may use: a scratch directory, the client's environment and
    a live server with the embedded default configuration (shared)."""

    def __init__(
        self,
        tmp_path: Path,
        server: LiveServer,
        fixture: Callable[[str], Any] | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.server = server
        #: another fixture, by name, for a run that needs one (a Kerberos realm)
        self.fixture = fixture or (lambda name: pytest.skip(f"no fixture {name} here"))
        self.env = {
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "DQRXFER_SERVER": server.url,
        }

    def run(self, *args: str, cwd: Path | None = None) -> str:
        """``args`` run as a user would (in ``cwd``); stdout then stderr."""
        result = subprocess.run(
            [tool(args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=cwd or self.tmp_path,
            env={**os.environ, **self.env},
        )
        return result.stdout + result.stderr

    def report(self, name: str, files: dict[str, bytes]) -> Path:
        directory = self.tmp_path / name
        directory.mkdir(parents=True)
        for file, data in files.items():
            (directory / file).write_bytes(data)
        return directory


#: The reports already on the server (and a local copy of one of them in the batch).
REPORT = {"index.html": b"<html><body>S230518h at LLO</body></html>\n", "data.json": b"{}\n"}


def new_report() -> dict[str, bytes]:
    """Files the server does not have yet, so that they are sent (not skipped
    as already there)."""
    token = os.urandom(8).hex().encode()
    return {"index.html": b"<html><body>" + token + b"</body></html>\n", "data.json": b"{}\n"}


# The runs of dqr-upload send revisions of their own (the examples' numbers
# are free), so that the reports the other examples show stay as seeded.


#: Revisions no other run sends to (two pages show the same command).
FRESH_REVISIONS = itertools.count(30)


def upload_two_files(context: Context, example: Example) -> str:
    directory = context.report("files", new_report())
    return context.run(
        "dqr-upload", "-p", "O4", "-g", "S230518h", "-u", "llo",
        "--revision", str(next(FRESH_REVISIONS)), "index.html", "data.json", cwd=directory,
    )  # fmt: skip


def upload_a_directory_with_an_outside_link(context: Context, example: Example) -> str:
    directory = context.report("S230518h_llo_6", new_report())
    outside = context.tmp_path / "home" / ".netrc"
    outside.parent.mkdir()
    outside.write_text("machine example.org\n")
    (directory / "netrc").symlink_to(outside)
    return context.run(
        "dqr-upload", "-p", "O4", "-g", "S230518h", "-u", "llo", "--revision", "6",
        "S230518h_llo_6/",
    )  # fmt: skip


KERBEROS_CONFIG = """auto_upgrade = true
[auth]
mode = "gssapi"
keytab = "{keytab}"
"""


def ping(context: Context, example: Example) -> str:
    """dqr-ping with a Kerberos ticket, against a server that checks it (the
    realm's service principal is HTTP/localhost)."""
    realm: Realm = context.fixture("kerberos")
    data = context.tmp_path / "data"
    data.mkdir()
    config = context.tmp_path / "server.toml"
    config.write_text(KERBEROS_CONFIG.format(keytab=realm.service_keytab))
    server = LiveServer(data, config=config, env=realm.server_env()).start()
    try:
        result = subprocess.run(
            [tool("dqr-ping"), "-s", f"http://localhost:{server.port}"],
            capture_output=True, text=True, timeout=120,
            env={**realm.client_env(realm.user_ccache), **context.env},
        )  # fmt: skip
    finally:
        server.discard()
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def configuration_errors(context: Context, example: Example) -> str:
    printed = []
    for content in (
        '[projects.O4]\nmax_upload_size = -5\nreports_root = "/srv/r/O4"\nurl = "https://x/"\n',
        'serve_reports = "false"\n',
        "sites = [1]\n",
        "serve_report = false\n",
    ):
        config = context.tmp_path / "server.toml"
        config.write_text(content)
        printed.append(context.run("dqrxfer-server", "db", "current", "--config", str(config)))
    return "".join(printed)


def schema_behind(context: Context, example: Example) -> str:
    config = context.tmp_path / "server.toml"
    config.write_text(f'data_dir = "{context.tmp_path / "data"}"\n')
    history = run_cli("dqrxfer-server", "db", "history", "--config", str(config)).stdout
    # One step behind the code: the newest revision's parent ("0002 -> 0003: ...").
    newest_step = next(line for line in history.splitlines() if " -> " in line)
    behind = newest_step.split(" -> ")[0]
    upgraded = run_cli("dqrxfer-server", "db", "upgrade", behind, "--config", str(config))
    assert upgraded.returncode == 0, upgraded.stderr
    return context.run("dqrxfer-server", "reports", "list", "--config", str(config))


def reports_list(context: Context, example: Example) -> str:
    context.report("S230518h_virgo_2", new_report())
    context.run(
        "dqr-upload", "-p", "O4", "-g", "S230518h", "-u", "virgo", "--revision", "2",
        "S230518h_virgo_2",
    )  # fmt: skip
    return context.run(
        "dqrxfer-server", "reports", "list", "--data-dir", str(context.server.data_dir),
        "--site", "virgo",
    )  # fmt: skip


def as_documented(context: Context, example: Example) -> str | object:
    """The example's own commands (curl, jq), sent to the live server; a JSON
    answer parsed."""
    printed = ""
    for command in example.commands:
        command = DOCUMENTED_SERVER.sub(context.server.url, command)
        result = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True
        )
        printed += result.stdout
    return json.loads(printed) if printed.startswith("{") else printed


def revalidation(context: Context, example: Example) -> str:
    """The ETag of an answer, then the same request with it (the example's
    second command shows a shortened tag)."""
    url = f"{context.server.url}/api/v1/events/S230518h/reports"
    etag = requests.get(url, timeout=30).headers["ETag"]
    again = subprocess.run(
        ["curl", "-si", "-H", f"If-None-Match: {etag}", url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return f"ETag: {etag}\n{again.stdout.splitlines()[0]}\n"


def report_page_headers(context: Context, example: Example) -> str:
    answer = subprocess.run(
        ["curl", "-si", f"{context.server.url}/reports/O4/S230518h_dir/S230518h_llo_1/index.html"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return answer.stdout


def batch_upload(context: Context, example: Example) -> str:
    """Three reports under one root: one the server lacks, one it has as
    here, one it has with both files different (the seeded LHO report)."""
    root = context.tmp_path / "public_html" / "O4"
    changed = {name: data + b"<!-- changed here -->\n" for name, data in REPORT.items()}
    for graceid, site, revision, files in (("GW230518A", "virgo", 1, REPORT),
                                           ("S230518h", "lho", 1, changed),
                                           ("S230518h", "llo", 1, REPORT)):  # fmt: skip
        report = root / f"{graceid}_dir" / f"{graceid}_{site}_{revision}"
        report.mkdir(parents=True)
        for name, data in files.items():
            (report / name).write_bytes(data)
    return context.run("dqr-batch-upload", "-p", "O4", "--jobs", "2", str(root))


def send(context: Context, payload: bytes, metadata: dict[str, str]) -> str:
    """One upload through the tus endpoint; the answer to its last PATCH."""
    created = create(context.server, len(payload), metadata)
    assert created.status_code == 201, created.text
    return patch(created.headers["Location"], 0, payload).text


def archive(*members: tuple[str, str | bytes]) -> bytes:
    """A tar archive of files (bytes) and symbolic links (their target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in members:
            member = tarfile.TarInfo(name)
            if isinstance(content, str):
                member.type, member.linkname = tarfile.SYMTYPE, content
                tar.addfile(member)
            else:
                member.size = len(content)
                tar.addfile(member, io.BytesIO(content))
    return buffer.getvalue()


def refusals(context: Context, example: Example) -> str:
    """A payload whose sha256 is not the metadata's, and an archive member
    climbing out of its report."""
    wrong_hash = report_metadata("notes.txt", revision="10", sha256="0" * 64)
    climbing = archive(("../S230518h_llo_10/index.html", b"<html></html>\n"))
    return send(context, b"notes\n", wrong_hash) + send(
        context, climbing, tar_metadata(revision=10)
    )


def link_escaping_over_two_archives(context: Context, example: Example) -> str:
    """Two archives into one report: the first's link escapes only through
    the second's."""
    first = send(context, archive(("d/b", "f/../../x")), tar_metadata("one.tar", revision=11))
    assert "nothing was published" not in first, first
    return send(context, archive(("d/f", "..")), tar_metadata("two.tar", revision=11))


def slow_upload(context: Context, example: Example) -> str:
    """A report large enough to be hashed while it is sent (64 MiB), over a
    link slow enough (6 MiB/s) for a progress line (every 10 %, at most every
    5 s), its log going to a file as in an HTCondor job."""
    report = context.report("S230518h_llo_1", {"index.html": new_report()["index.html"]})
    with open(report / "data.bin", "wb") as data:
        data.truncate(64 * MiB)  # sparse: nothing to write, all to send
    context.env.pop("DQRXFER_SERVER")
    with FaultProxy(context.server.port, Faults(rate=6 * MiB)) as link:
        return context.run(
            "dqr-upload", "-s", link.url, "-p", "O4", "-g", "S230518h", "-u", "llo",
            "--revision", "3", str(report),
        )  # fmt: skip


def interrupted_upload(context: Context, example: Example) -> str:
    """SIGTERM to an upload over a slow link (2 MiB/s) once a third of it is
    on the server (as an HTCondor eviction would)."""
    size = 24 * MiB
    report = context.report("S230518h_llo_7", {})
    (report / "data.bin").write_bytes(os.urandom(size))
    uploads = context.server.data_dir / "uploads"
    before = {path for path in uploads.iterdir() if path.is_file()}

    def received() -> int:
        return sum(
            path.stat().st_size
            for path in uploads.iterdir()
            if path.is_file() and not path.suffix and path not in before
        )

    context.env.pop("DQRXFER_SERVER")
    with FaultProxy(context.server.port, Faults(rate=2 * MiB)) as link:
        process = subprocess.Popen(
            [tool("dqr-upload"), "-s", link.url, "--chunk-size", "1", "-p", "O4", "-g",
             "S230518h", "-u", "llo", "--revision", "7", str(report / "data.bin")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **context.env},
        )  # fmt: skip
        try:

            def a_third_on_the_server() -> bool:
                assert process.poll() is None, "the upload ended before its signal"
                return received() >= size // 3

            wait_for(a_third_on_the_server, 120, interval=0.01, what="a third on the server")
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()  # no-op once it ended
            process.wait()
    assert process.returncode == 143, err
    return out + err


def no_database(context: Context, example: Example) -> str:
    """A read-only command pointed at a data directory without a database."""
    mistyped = context.tmp_path / "dqrxfre"
    return context.run("dqrxfer-server", "reports", "list", "--data-dir", str(mistyped))


def database_refused(context: Context, example: Example) -> str:
    """A PostgreSQL ``database_url`` where no server listens."""
    config = context.tmp_path / "server.toml"
    config.write_text(
        f'data_dir = "{context.tmp_path / "data"}"\n'
        f'database_url = "postgresql+psycopg://dqrxfer@127.0.0.1:{free_port()}/dqrxfer"\n'
    )
    return context.run("dqrxfer-server", "reports", "list", "--config", str(config))


def backup_and_restore(context: Context, example: Example) -> str:
    """The example's two commands on a database of their own (restore
    replaces the database: never the shared server's)."""
    data = context.tmp_path / "data"
    upgraded = run_cli("dqrxfer-server", "db", "upgrade", "--data-dir", str(data))
    assert upgraded.returncode == 0, upgraded.stderr
    backup = context.tmp_path / "backups" / "dqrxfer-2026-12-06.db"
    backup.parent.mkdir()
    return context.run(
        "dqrxfer-server", "db", "backup", str(backup), "--data-dir", str(data)
    ) + context.run("dqrxfer-server", "db", "restore", str(backup), "--data-dir", str(data))


#: Each example block, by page and first line, and the run it shows.
RUNS: dict[tuple[str, str], Run] = {
    (
        "users/upload.md",
        "$ dqr-upload -p O4 -g S230518h -u llo --revision 1 index.html data.json",
    ): upload_two_files,
    (
        "client.md",
        "$ dqr-upload -p O4 -g S230518h -u llo --revision 1 index.html data.json",
    ): upload_two_files,
    (
        "users/upload.md",
        "$ dqr-upload -p O4 -g S230518h -u llo --revision 1 S230518h_llo_1/",
    ): upload_a_directory_with_an_outside_link,
    ("client.md", "$ dqr-ping"): ping,
    (
        "client.md",
        "INFO:dqr-xfer:Uploading /home/dqr/S230518h_llo_1 (1.2 GiB, kind=tar) to "
        "https://.../files/3f2a..., hashing it meanwhile",
    ): slow_upload,
    ("client.md", "$ dqr-batch-upload -p O4 --jobs 2 ~/public_html/O4"): batch_upload,
    (
        "operators/configuration.md",
        "dqrxfer-server: configuration error: projects.O4.max_upload_size: must be a positive "
        "whole number of bytes (got -5)",
    ): configuration_errors,
    (
        "operators/database.md",
        "dqrxfer-server: database schema is at revision 0002, this code needs 0003: run "
        "'dqrxfer-server db upgrade' (with the same --config / --data-dir)",
    ): schema_behind,
    (
        "reports.md",
        "graceid   site   revision  project  file_count  bytes  updated                           "
        "path",
    ): reports_list,
    ("api.md", "$ curl -s https://dqr.example.org/api/v1/events/S230518h/reports"): as_documented,
    (
        "api.md",
        "$ curl -s 'https://dqr.example.org/api/v1/reports?site=llo&project=O4&since=2023-05-18"
        "&limit=20'",
    ): as_documented,
    ("api.md", "$ curl -s 'https://dqr.example.org/api/v1/reports?since=yesterday'"): as_documented,
    (
        "api.md",
        "$ curl -s 'https://dqr.example.org/api/v1/events/S230518h/reports?latest=1' | jq -r "
        "'.reports[] | \"\\(.site) \\(.revision) \\(.url)\"'",
    ): as_documented,
    (
        "api.md",
        "$ curl -si https://dqr.example.org/api/v1/events/S230518h/reports | grep -i etag",
    ): revalidation,
    (
        "api.md",
        "Content-Security-Policy: sandbox allow-scripts allow-popups "
        "allow-popups-to-escape-sandbox allow-downloads",
    ): report_page_headers,
    ("operators/maintenance.md", "$ curl -s http://127.0.0.1:8080/healthz"): as_documented,
    (
        "client.md",
        "ERROR:dqr-xfer:interrupted by SIGTERM: 27.0 MiB of 76.3 MiB on the server; run the "
        "same command again to resume",
    ): interrupted_upload,
    (
        "users/exit-codes.md",
        "ERROR:dqr-xfer:interrupted by SIGTERM: 27.0 MiB of 76.3 MiB on the server; run the "
        "same command again to resume",
    ): interrupted_upload,
    (
        "operators/commands.md",
        "dqrxfer-server: no database at /srv/dqrxfre/dqrxfer.sqlite (wrong --data-dir or "
        "--config? 'dqrxfer-server db upgrade' creates one)",
    ): no_database,
    (
        "operators/commands.md",
        "dqrxfer-server: cannot use the database (database_url): connection failed: connection "
        'to server at "10.0.0.5", port 5432 failed: Connection refused Is the server running on '
        "that host and accepting TCP/IP connections?",
    ): database_refused,
    (
        "operators/commands.md",
        "$ dqrxfer-server db backup /var/backups/dqrxfer/dqrxfer-$(date +%F).db",
    ): backup_and_restore,
    (
        "reports.md",
        "sha256: the received payload hashes to 9f2c..., not 0000... as the metadata says; "
        "nothing was published",
    ): refusals,
    (
        "reports.md",
        "archive: 'd/b': symbolic link to 'f/../../x' leaves the report (through the link "
        "'d/f'); every symbolic link must resolve inside its report; nothing was published",
    ): link_escaping_over_two_archives,
}

#: Example blocks another test checks, line for line against a run made for
#: them (one check per block): by page and first line, the test's file and name.
CHECKED_ELSEWHERE: dict[tuple[str, str], tuple[str, str]] = {
    **{
        ("operators/commands.md", f"$ dqrxfer-server {command}"): (
            "test_reports_cli.py",
            "test_the_documented_report_commands_print_what_the_page_shows",
        )
        for command in (
            "reports list",
            "reports show S230518h_lho_3",
            "reports register --project O4 --graceid S230518h --site lho --revision 3 "
            "--path /home/detchar/cit/S230518h_lho_3",
            "reindex --dry-run",
        )
    },
    **{
        (page, "$ dqrxfer-server cleanup"): (
            "test_tus_expiration.py",
            "test_the_documented_cleanup_output_is_what_cleanup_prints",
        )
        for page in ("operators/commands.md", "operators/maintenance.md")
    },
}

ALL = list(examples(DOCS))


def test_every_example_block_is_checked() -> None:
    assert len(ALL) >= 10  # the finder finds them
    named = {(example.page, example.first) for example in ALL}
    unchecked = [
        example.name
        for example in ALL
        if (example.page, example.first) not in RUNS.keys() | CHECKED_ELSEWHERE.keys()
    ]
    assert not unchecked, (
        f"example output blocks that no run checks (name them in RUNS): {unchecked}"
    )
    assert not RUNS.keys() & CHECKED_ELSEWHERE.keys(), "one check per block"
    stale = (RUNS.keys() | CHECKED_ELSEWHERE.keys()) - named
    assert not stale, f"blocks named here that are no longer in the docs: {sorted(stale)}"
    tests = Path(__file__).parent
    for file, test in set(CHECKED_ELSEWHERE.values()):
        assert f"def {test}(" in (tests / file).read_text(), f"{file} has no {test}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("examples") / "data"
    data.mkdir()
    live = LiveServer(data).start()
    # The reports the examples show: S230518h from LHO (revision 1) and LLO (1 and 2).
    seed = tmp_path_factory.mktemp("seed")
    for site, revision in (("lho", 1), ("llo", 1), ("llo", 2)):
        directory = seed / f"S230518h_{site}_{revision}"
        directory.mkdir()
        for name, data in REPORT.items():
            (directory / name).write_bytes(data)
        sent = run_cli(
            "dqr-upload", "-s", live.url, "-p", "O4", "-g", "S230518h", "-u", site,
            "--revision", str(revision), str(directory),
            env={"XDG_CACHE_HOME": str(seed / "cache"), "XDG_CONFIG_HOME": str(seed)},
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
    yield live
    live.discard()


@pytest.mark.parametrize(
    "example", [e for e in ALL if (e.page, e.first) in RUNS], ids=lambda e: e.name
)
def test_the_example_is_what_the_command_prints(
    example: Example, server: LiveServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    context = Context(tmp_path, server, request.getfixturevalue)
    printed = RUNS[example.page, example.first](context, example)
    if example.is_json:
        missing = unmatched_json(example.output, printed)
        shown = json.dumps(printed, indent=1)
    else:
        assert isinstance(printed, str)
        missing = unmatched(example.output, printed)
        shown = printed
    assert not missing, (
        f"{example.name}: these documented lines are not what the command prints:\n"
        + "\n".join(missing)
        + f"\n--- it printed:\n{shown}"
    )


@pytest.mark.parametrize(
    ("documented", "printed", "matches"),
    [
        # Variable parts are free...
        (
            "INFO:dqr-xfer:Uploaded index.html (5120 bytes, sha256 1f0c...) in 0.4s, 5.0 KiB sent",
            "INFO:dqr-xfer:Uploaded index.html (42 bytes, sha256 f59c7249f3f9) in 0.0s, 42 B sent",
            True,
        ),
        ("https://.../S230518h_dir/", "http://127.0.0.1:8080/reports/O4/S230518h_dir/", True),
        ("removed /srv/a/<label>.<random>", "removed /tmp/pytest/a/S230518h_llo_9.x1", True),
        ("a  b    c", "a b c", True),
        # ... the words are not,
        (
            "INFO:dqr-xfer:Uploaded index.html (5120 bytes)",
            "INFO:dqr-xfer:Sent index.html (5120 bytes)",
            False,
        ),
        ("Uploaded index.html (5120 bytes)", "Uploaded index.html (5120 bytes) in 0.4s", False),
        # nor the kind of unit: decimal units where binary ones are printed drift.
        ("41.3 MB/s", "41.3 MiB/s", False),
    ],
)
def test_only_the_variable_parts_of_an_example_are_free(
    documented: str, printed: str, matches: bool
) -> None:
    assert (unmatched([documented], printed) == []) is matches
