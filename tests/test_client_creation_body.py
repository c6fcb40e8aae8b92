"""A small upload sent in its creation request (creation-with-upload): one
round trip instead of two, when nothing holds its bytes back; a plain POST for
a server without the extension; a connection cut in the POST's body costs
that body and nothing else.  Real server (its access log names every
request), real ``dqr-upload``, the test suite's fault proxy."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dqrxfer.job import CARRIED_MAX
from support.cli import run_cli
from support.faultproxy import FaultProxy, Faults
from support.live import LiveServer
from support.request_log import Request, requests_of
from support.tus import dqr_upload_command

SUPPORT = Path(__file__).parent / "support"


def logged(data_dir: Path, tmp_path: Path, hidden: str | None = None) -> LiveServer:
    """The real server, each request in its access log; ``hidden``: the
    extensions taken out of its answers."""
    if hidden is None:
        return LiveServer(
            data_dir, extra_args=["--gunicorn-config", str(SUPPORT / "request_log.py")]
        )
    config = tmp_path / "gunicorn_config.py"
    config.write_text(
        "import os, runpy\n"
        f"os.environ['DQRXFER_TEST_HIDDEN_EXTENSIONS'] = {hidden!r}\n"
        f"hiding = runpy.run_path({str(SUPPORT / 'no_concatenation.py')!r})\n"
        "post_worker_init = hiding['post_worker_init']\n"
        "access_log_format = "
        f"runpy.run_path({str(SUPPORT / 'request_log.py')!r})['access_log_format']\n"
    )
    return LiveServer(data_dir, extra_args=["--gunicorn-config", str(config)])


@pytest.fixture
def logged_server(data_dir: Path, tmp_path: Path) -> Iterator[LiveServer]:
    server = logged(data_dir, tmp_path).start()
    yield server
    server.discard()


def payload(root: Path, name: str, size: int) -> Path:
    path = root / name
    path.write_bytes(os.urandom(size))
    return path


def uploads_of(server: LiveServer, since: int = 0) -> list[Request]:
    return [r for r in requests_of(server.log())[since:] if r.path.startswith("/files")]


def same(published: Path, path: Path) -> bool:
    return hashlib.sha256(published.read_bytes()).digest() == (
        hashlib.sha256(path.read_bytes()).digest()
    )


def test_a_small_upload_goes_in_its_creation_request_when_nothing_holds_it(
    logged_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    first = payload(tmp_path, "first.bin", 300_000)
    second = payload(tmp_path, "second.bin", CARRIED_MAX)
    done = run_cli(*dqr_upload_command(logged_server.url, str(first), str(second)), env=client_env)
    assert done.returncode == 0, done.stderr
    sent = uploads_of(logged_server)
    creations = [r for r in sent if r.method == "POST"]
    # The first payload's upload is made while the server's copy is asked
    # (held at the gate, no byte in the POST: one PATCH); the second's
    # creation carries all its bytes: no PATCH.
    assert [r.length or 0 for r in creations] == [0, CARRIED_MAX]
    assert [r.length for r in sent if r.method == "PATCH"] == [300_000]
    assert creations[1].status == 201 and creations[1].answer == CARRIED_MAX
    assert same(logged_server.published("first.bin"), first)
    assert same(logged_server.published("second.bin"), second)

    # --force: no comparison, so no gate: the one upload goes in its POST.
    before = len(requests_of(logged_server.log()))
    again = run_cli(
        *dqr_upload_command(logged_server.url, "--force", str(first), revision=2), env=client_env
    )
    assert again.returncode == 0, again.stderr
    assert [(r.method, r.length) for r in uploads_of(logged_server, before)] == [("POST", 300_000)]
    assert same(logged_server.published("first.bin", revision=2), first)


def test_a_larger_upload_is_created_without_its_bytes(
    logged_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    path = payload(tmp_path, "large.bin", CARRIED_MAX + 1)
    done = run_cli(*dqr_upload_command(logged_server.url, "--force", str(path)), env=client_env)
    assert done.returncode == 0, done.stderr
    creations = [r for r in uploads_of(logged_server) if r.method == "POST"]
    assert [r.length or 0 for r in creations] == [0]
    assert same(logged_server.published("large.bin"), path)


def test_a_server_without_creation_with_upload_gets_a_plain_post(
    data_dir: Path, tmp_path: Path, client_env: dict[str, str]
) -> None:
    server = logged(data_dir, tmp_path, hidden="creation-with-upload").start()
    try:
        path = payload(tmp_path, "small.bin", 300_000)
        done = run_cli(*dqr_upload_command(server.url, "--force", str(path)), env=client_env)
        assert done.returncode == 0, done.stderr
        sent = uploads_of(server)
        assert [(r.method, r.length or 0) for r in sent if r.method != "OPTIONS"] == [
            ("POST", 0),
            ("PATCH", 300_000),
        ]
        assert same(server.published("small.bin"), path)
    finally:
        server.discard()


def test_a_connection_cut_in_the_creation_body_costs_that_body_only(
    logged_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    size = 3 * 1024 * 1024
    path = payload(tmp_path, "cut.bin", size)
    # The link's first cut falls 1-2 MiB into the traffic: in the POST's body
    # (OPTIONS before it is a few hundred bytes); the next 1-2 MiB later.
    faults = Faults(cut_link_every=(1024 * 1024, 2 * 1024 * 1024))
    with FaultProxy(logged_server.port, faults, seed=3) as proxy:
        done = run_cli(*dqr_upload_command(proxy.url, "--force", str(path)), env=client_env)
        cuts, up = proxy.counters.cuts, proxy.counters.up_bytes
    assert done.returncode == 0, done.stderr
    assert cuts >= 1
    creations = [r for r in uploads_of(logged_server) if r.method == "POST"]
    # The cut POST (its URL never came back; logged when the server gives up
    # on its body, after the next), and a new upload without bytes, sent by PATCH.
    assert sorted((r.length or 0, r.status == 201) for r in creations) == [
        (0, True),
        (size, False),
    ], creations
    assert same(logged_server.published("cut.bin"), path)
    # Sent again: at most the cut body and what each later cut costs.
    assert up - size <= size * cuts
