"""Authorization and size limits on every path that stores bytes, against a
live server in ``remote-user`` mode (a principal the rules list, and one they
do not): partial uploads pass the same rule check as whole uploads, a final
upload joins only its principal's partial uploads made for it, a project's
``max_upload_size`` holds for deferred lengths, every PATCH and concatenation,
and ``max_unfinished_bytes`` caps what one principal's unfinished uploads hold.

Every refusal names its rule, and a refused creation leaves nothing in the
upload store."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dqrxfer.server.config import ConfigError, load_settings
from dqrxfer.server.tus import FileStore, TusHooks, TusOptions, UploadInfo, Uploads
from dqrxfer.server.tus.locker import FileLocker
from dqrxfer.server.tus.metrics import tus_metrics
from support.cli import run_cli
from support.live import LiveServer
from support.remote_user import PROXY, as_principal
from support.tus import (
    create,
    data_file,
    dqr_upload_command,
    head,
    new_upload,
    patch,
    published,
    report_metadata,
    sha256_hex,
    upload_files,
    upload_id,
    wait_for,
)
from support.tus import (
    create_final as final,
)

PROJECT_LIMIT = 2000
CAP = 5000
RULE = f"project O4's max_upload_size is {PROJECT_LIMIT} bytes"
STRANGER = "mallory@EXAMPLE.ORG"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("authorization")
    data = root / "data"
    data.mkdir()
    config = root / "server.toml"
    config.write_text(
        f"""auto_upgrade = true
upload_expiry = 3600
max_unfinished_bytes = {CAP}

[projects.O4]
reports_root = "{data / "reports" / "O4"}"
url = "/reports/O4/"
max_upload_size = {PROJECT_LIMIT}

[projects.personal]
reports_root = "{data / "reports" / "personal"}"
url = "/reports/personal/"

[auth]
mode = "remote-user"

[[auth.rules]]
name = "people"
principals = ["*@LIGO.ORG"]
"""
    )
    live = LiveServer(data, config=config, extra_args=["--trusted-proxy", f"{PROXY}/32"])
    yield live.start()
    live.stop()


def person(name: str) -> requests.Session:
    """A principal the rules allow; each test its own, so that their unfinished
    uploads never count against another test's cap."""
    return as_principal(f"{name}@LIGO.ORG")


PARTIAL = {"Upload-Concat": "partial"}


# -- partial uploads are authorized as whole uploads ------------------------------------------


def test_a_partial_upload_without_report_metadata_is_refused(server: LiveServer) -> None:
    before = upload_files(server)
    for session in (person("partial.nometa"), as_principal(STRANGER)):
        response = create(server, 1000, {}, PARTIAL, session=session)
        assert response.status_code == 400, response.text
        assert response.text.startswith("project: is required (a partial upload, Upload-Concat")
        assert "checked and authorized as it is" in response.text
        assert "Location" not in response.headers
    assert upload_files(server) == before


def test_a_partial_upload_of_a_principal_no_rule_lists_is_refused(server: LiveServer) -> None:
    stranger = as_principal(STRANGER)
    before = upload_files(server)
    for length in (1000, None):
        response = create(server, length, report_metadata(), PARTIAL, session=stranger)
        assert response.status_code == 403, response.text
        assert response.text == (
            f"{STRANGER} may not upload to project O4: no rule in auth.rules lists this "
            "principal for this project\n"
        )
    assert upload_files(server) == before


def test_a_final_upload_joins_only_its_principals_partial_uploads(server: LiveServer) -> None:
    owner, other = person("joins.owner"), person("joins.other")
    metadata = report_metadata()
    url = new_upload(server, 3, metadata=metadata, headers=PARTIAL, session=owner)
    assert patch(url, 0, b"abc", session=owner).status_code == 204
    before = upload_files(server)

    # Someone else's partial upload: as if it did not exist.
    response = final(server, [url], metadata, session=other)
    assert response.status_code == 400
    assert response.text.startswith(f"Upload-Concat: no partial upload {url}")
    response = final(server, [url], {**metadata, "graceid": "S230518i"}, session=owner)
    assert response.status_code == 400
    assert "was created with graceid 'S230518h' (not 'S230518i')" in response.text
    assert "a final upload joins only partial uploads created with its report metadata" in (
        response.text
    )
    assert upload_files(server) == before

    response = final(server, [url], {**metadata, "sha256": sha256_hex(b"abc")}, session=owner)
    assert response.status_code == 201, response.text
    assert published(server, metadata).read_bytes() == b"abc"


# -- a project's max_upload_size on every path ------------------------------------------------


def test_a_whole_or_partial_upload_over_the_project_limit_is_refused(server: LiveServer) -> None:
    session = person("limit.create")
    before = upload_files(server)
    for headers in ({}, PARTIAL):
        response = create(server, PROJECT_LIMIT + 1, report_metadata(), headers, session=session)
        assert response.status_code == 413
        assert (
            response.text
            == f"Upload-Length: {PROJECT_LIMIT + 1} bytes is over the limit ({RULE})\n"
        )
    # Creation with upload, length deferred: the first body is checked before anything exists.
    response = create(
        server, None, report_metadata(), body=os.urandom(PROJECT_LIMIT + 1), session=session
    )
    assert response.status_code == 413
    assert response.text.startswith(
        f"request body: {PROJECT_LIMIT + 1} bytes is over the limit ({RULE})"
    )
    assert upload_files(server) == before
    # Another project, another limit.
    assert new_upload(
        server, PROJECT_LIMIT + 1, metadata=report_metadata(project="personal"), session=session
    )


def test_a_deferred_length_is_held_to_the_project_limit(server: LiveServer) -> None:
    session = person("limit.deferred")
    metadata = report_metadata()
    url = new_upload(server, None, metadata=metadata, session=session)
    first = os.urandom(1500)
    assert patch(url, 0, first, session=session).status_code == 204

    # Declaring a length over the limit.
    response = patch(url, 1500, b"", {"Upload-Length": str(PROJECT_LIMIT + 1)}, session=session)
    assert response.status_code == 413
    assert response.text == f"Upload-Length: {PROJECT_LIMIT + 1} bytes is over the limit ({RULE})\n"
    # A body that would take the offset past it: with Content-Length, and chunked.
    for body in (os.urandom(501), iter([os.urandom(300), os.urandom(201)])):
        response = patch(url, 1500, body, session=session)
        assert response.status_code == 413
        assert response.text == (
            f"request body: over the limit ({RULE}; 1500 bytes received, 500 more allowed)\n"
        )
        info = head(url, session=session)
        assert info.headers["Upload-Offset"] == "1500"
        assert info.headers["Upload-Defer-Length"] == "1"
        assert data_file(server, url).read_bytes() == first  # nothing beyond is stored

    # Up to the limit is fine.
    rest = os.urandom(500)
    response = patch(url, 1500, rest, {"Upload-Length": str(PROJECT_LIMIT)}, session=session)
    assert response.status_code == 204, response.text
    assert published(server, metadata).read_bytes() == first + rest


def test_a_concatenation_is_held_to_the_project_limit(server: LiveServer) -> None:
    session = person("limit.concat")
    metadata = report_metadata()
    urls = [
        new_upload(server, 1500, metadata=metadata, headers=PARTIAL, session=session)
        for _ in range(2)
    ]
    for url in urls:
        assert patch(url, 0, os.urandom(1500), session=session).status_code == 204
    before = upload_files(server)
    response = final(server, urls, metadata, session=session)
    assert response.status_code == 413
    assert response.text == f"Upload-Concat: 3000 bytes is over the limit ({RULE})\n"
    assert upload_files(server) == before

    # Lengths not known when the final upload is made: refused at concatenation.
    deferred = new_upload(server, None, metadata=metadata, headers=PARTIAL, session=session)
    response = final(server, [urls[0], deferred], metadata, session=session)
    assert response.status_code == 201, response.text
    final_url = response.headers["Location"]
    response = patch(deferred, 0, os.urandom(600), {"Upload-Length": "600"}, session=session)
    assert response.status_code == 204
    info = head(final_url, session=session)
    assert info.headers["Upload-Length"] == "2100"
    assert "Upload-Offset" not in info.headers  # never concatenated
    assert data_file(server, final_url).stat().st_size == 0
    assert not published(server, metadata).exists()
    assert f"final upload {upload_id(final_url)} not completed now: concatenated upload: " in (
        server.log()
    )


# -- max_unfinished_bytes per principal ----------------------------------------------------


def cap_rule(principal: str, left: int) -> str:
    return (
        f"max_unfinished_bytes is {CAP} bytes per principal, and the unfinished uploads "
        f"of {principal} leave {left}"
    )


def test_unfinished_uploads_of_one_principal_are_capped(server: LiveServer) -> None:
    session, other = person("cap.one"), person("cap.other")
    whole = new_upload(server, 2000, metadata=report_metadata(), session=session)
    new_upload(server, 2000, metadata=report_metadata(), headers=PARTIAL, session=session)
    before = upload_files(server)
    for headers in ({}, PARTIAL):
        response = create(server, 1001, report_metadata(), headers, session=session)
        assert response.status_code == 413
        assert response.text == (
            f"Upload-Length: 1001 bytes is over the limit ({cap_rule('cap.one@LIGO.ORG', 1000)})\n"
        )
    assert upload_files(server) == before
    # Someone else has a cap of their own.
    new_upload(server, 2000, metadata=report_metadata(), session=other)
    # A finished (published) upload no longer counts.
    assert patch(whole, 0, os.urandom(2000), session=session).status_code == 204
    new_upload(server, 2000, metadata=report_metadata(), session=session)


def test_a_deferred_length_upload_counts_what_it_received(server: LiveServer) -> None:
    session = person("cap.deferred")
    new_upload(server, 2000, metadata=report_metadata(), session=session)
    new_upload(server, 2000, metadata=report_metadata(), session=session)
    url = new_upload(server, None, metadata=report_metadata(), session=session)
    assert patch(url, 0, os.urandom(600), session=session).status_code == 204
    response = patch(url, 600, os.urandom(401), session=session)
    assert response.status_code == 413
    assert response.text == (
        f"request body: over the limit ({cap_rule('cap.deferred@LIGO.ORG', 1000)}; "
        "600 bytes received, 400 more allowed)\n"
    )
    response = patch(url, 600, b"", {"Upload-Length": "1001"}, session=session)
    assert response.status_code == 413
    assert cap_rule("cap.deferred@LIGO.ORG", 1000) in response.text
    assert data_file(server, url).stat().st_size == 600
    # The 600 received count: 400 more is all anyone of this principal may add.
    response = create(server, 401, report_metadata(), session=session)
    assert response.status_code == 413
    assert cap_rule("cap.deferred@LIGO.ORG", 400) in response.text


class HeldBody:
    """A PATCH body of ``size`` bytes (its Content-Length known) whose second
    half is sent only once ``release`` is set: the request stays in flight."""

    def __init__(self, size: int, release: threading.Event) -> None:
        self.parts = [os.urandom(size // 2), os.urandom(size - size // 2)]
        self.size = size
        self.release = release
        self.started = threading.Event()

    def __len__(self) -> int:
        return self.size

    def read(self, _size: int = -1) -> bytes:
        if not self.parts:
            return b""
        if len(self.parts) == 1:
            self.started.set()
            self.release.wait(timeout=60)
        return self.parts.pop(0)


def test_deferred_length_patches_at_once_count_each_other(server: LiveServer) -> None:
    """Four PATCHes of 2000 bytes into four deferred-length uploads of one
    principal, all in flight at once: each reserves its body under the
    owner's lock, so the cap of 5000 lets two through, not four."""
    urls = [
        new_upload(server, None, metadata=report_metadata(), session=person("cap.patches"))
        for _ in range(4)
    ]
    release = threading.Event()
    bodies = [HeldBody(2000, release) for _ in urls]
    statuses: dict[int, int | str] = {}

    def send_body(index: int) -> None:
        try:
            response = patch(urls[index], 0, bodies[index], session=person("cap.patches"))
            statuses[index] = response.status_code
        except requests.ConnectionError:  # refused before its body was read
            statuses[index] = "closed"

    threads = [threading.Thread(target=send_body, args=(index,)) for index in range(len(urls))]
    for thread in threads:
        thread.start()
    wait_for(
        lambda: all(
            body.started.is_set() or index in statuses for index, body in enumerate(bodies)
        ),
        timeout=60,
        what="every PATCH in flight or answered",
    )
    release.set()
    for thread in threads:
        thread.join(timeout=60)

    accepted = [index for index, status in statuses.items() if status == 204]
    assert len(accepted) == 2, statuses
    assert all(statuses[index] in (413, "closed") for index in statuses if index not in accepted)
    stored = sum(data_file(server, url).stat().st_size for url in urls)
    assert stored == 4000 <= CAP


def race(server: LiveServer, session: requests.Session | None = None) -> list[int]:
    """Twelve creations of 2000 bytes at once (the server's two worker
    processes take them on several threads); their statuses."""
    barrier = threading.Barrier(12)
    statuses: list[int] = []

    def attempt() -> None:
        barrier.wait()
        statuses.append(create(server, 2000, report_metadata(), session=session).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(statuses)


def test_creations_at_once_count_each_other(server: LiveServer) -> None:
    """The cap of 5000 lets exactly two of them through (file locks)."""
    principal = "cap.race@LIGO.ORG"
    assert race(server, as_principal(principal)) == [201] * 2 + [413] * 10
    mine = [
        path
        for path in (server.data_dir / "uploads").glob("*.info")
        if f'"owner": "{principal}"' in path.read_text()
    ]
    assert len(mine) == 2


def test_creations_at_once_count_each_other_with_postgresql_locks(
    module_postgres_url: str, tmp_path: Path
) -> None:
    """The same with PostgreSQL (advisory locks, as several hosts use)."""
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "server.toml"
    config.write_text(
        f'auto_upgrade = true\ndatabase_url = "{module_postgres_url}"\n'
        f"max_unfinished_bytes = {CAP}\n"
    )
    live = LiveServer(data, config=config).start()
    try:
        assert race(live) == [201] * 2 + [413] * 10
        assert len(list((data / "uploads").glob("*.info"))) == 2
    finally:
        live.discard()


# -- the count, unit by unit ---------------------------------------------------------------


def test_what_counts_as_unfinished(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "uploads", fsync="never")
    uploads = Uploads(
        store,
        FileLocker(tmp_path / "locks"),
        TusHooks(),
        TusOptions(expiry=3600, max_unfinished_bytes=CAP),
        tus_metrics(),
    )

    def make(length: int | None, owner: str = "a@X", received: int = 0, **fields: object) -> str:
        info = store.create(UploadInfo(id="", length=length, owner=owner, **fields))  # type: ignore[arg-type]
        chunks = [os.urandom(received)] if received else []
        store.write(info.id, 0, lambda size: chunks.pop() if chunks else b"", received)
        return info.id

    make(1000)  # declared: its length
    make(None, received=300)  # deferred: what it received
    make(700, concat="partial", received=10)
    make(None, concat="final", partials=[])  # a final upload: its partials' bytes
    make(5000, owner="b@X")  # someone else's
    stale = make(2000)
    old = os.stat(store.data_path(stale)).st_mtime - 7200
    os.utime(store.data_path(stale), (old, old))  # expired: takes no more bytes
    done = store.get(make(50, received=50))
    store.mark_completed(done)  # completed
    store.terminate(make(400))  # gone
    assert uploads.unfinished_bytes("a@X") == 1000 + 300 + 700
    assert uploads.owner_room("a@X") == CAP - 2000
    assert uploads.unfinished_bytes("b@X") == 5000
    assert uploads.unfinished_bytes("c@X") == 0
    # Only the owner's uploads in progress are read: hints of uploads
    # completed or gone do not stay.
    hints = {path.name for path in (tmp_path / "uploads" / "owners").glob("*/*")}
    assert done.id not in hints and len(hints) == 6


# -- the configuration key -----------------------------------------------------------------


def test_max_unfinished_bytes_is_configured_and_defaults_to_four_largest_uploads(
    tmp_path: Path,
) -> None:
    config = tmp_path / "server.toml"
    projects = (
        f'[projects.O4]\nreports_root = "{tmp_path / "O4"}"\nurl = "/O4/"\nmax_upload_size = 300\n'
        f'[projects.personal]\nreports_root = "{tmp_path / "p"}"\nurl = "/p/"\n'
        "max_upload_size = 1000\n"
    )
    config.write_text(projects)
    assert load_settings(config, tmp_path).max_unfinished_bytes == 4 * 1000
    assert load_settings(None, tmp_path).max_unfinished_bytes == 4 * 64 * 1024**3
    config.write_text(f"max_unfinished_bytes = 123\n{projects}")
    assert load_settings(config, tmp_path).max_unfinished_bytes == 123
    for value in ("0", "-5", '"lots"', "true", "1.5"):
        config.write_text(f"max_unfinished_bytes = {value}\n{projects}")
        with pytest.raises(ConfigError, match="^max_unfinished_bytes: must be"):
            load_settings(config, tmp_path)


# -- dqr-upload meets the limits -------------------------------------------------------------

MiB = 1024 * 1024


@pytest.fixture
def small_limits(tmp_path: Path) -> Iterator[LiveServer]:
    """No authentication (every upload is the anonymous client's), O4 limited
    to 2.5 MiB, 4 MiB of unfinished uploads."""
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "server.toml"
    config.write_text(
        f"auto_upgrade = true\nmax_unfinished_bytes = {4 * MiB}\n\n"
        f'[projects.O4]\nreports_root = "{data / "reports" / "O4"}"\nurl = "/reports/O4/"\n'
        f"max_upload_size = {5 * MiB // 2}\n"
    )
    live = LiveServer(data, config=config).start()
    yield live
    live.discard()


def dqr_upload(server: LiveServer, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*dqr_upload_command(server.url, "--retries", "1", *extra, str(path)))


def test_dqr_upload_in_partial_uploads_is_held_to_the_project_limit(
    small_limits: LiveServer, tmp_path: Path
) -> None:
    """Two partial uploads of 2 and 1 MiB pass; the final upload of 3 MiB that
    would join them does not."""
    payload = tmp_path / "three.bin"
    payload.write_bytes(os.urandom(3 * MiB))
    result = dqr_upload(small_limits, payload, "--parallel", "2", "--chunk-size", "1")
    assert result.returncode == 4, result.stderr
    assert (
        f"Upload-Concat: {3 * MiB} bytes is over the limit "
        f"(project O4's max_upload_size is {5 * MiB // 2} bytes)"
    ) in result.stderr
    assert not small_limits.published("three.bin").exists()


def test_dqr_upload_is_held_to_the_cap_on_unfinished_bytes(
    small_limits: LiveServer, tmp_path: Path
) -> None:
    unfinished = create(small_limits, 2 * MiB, report_metadata())
    assert unfinished.status_code == 201
    before = upload_files(small_limits)
    payload = tmp_path / "two.bin"
    payload.write_bytes(os.urandom(2 * MiB + 1))
    result = dqr_upload(small_limits, payload)
    assert result.returncode == 4, result.stderr
    assert (
        f"Upload-Length: {2 * MiB + 1} bytes is over the limit (max_unfinished_bytes is "
        f"{4 * MiB} bytes per principal, and the unfinished uploads of anonymous clients "
        f"leave {2 * MiB})"
    ) in result.stderr
    assert upload_files(small_limits) == before
    # Once the other upload is finished, there is room.
    assert patch(unfinished.headers["Location"], 0, os.urandom(2 * MiB)).status_code == 204
    result = dqr_upload(small_limits, payload)
    assert result.returncode == 0, result.stderr
    assert small_limits.published("two.bin").read_bytes() == payload.read_bytes()
