"""The server's answer to OPTIONS remembered across runs: a repeat upload to the
same server asks no OPTIONS; an answer too old, unreadable or out of date is
asked again and the upload still succeeds.  Real server (its access log names
every request), real ``dqr-upload``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from dqrxfer.capabilities import REMEMBERED_FOR, explained_by_stale
from dqrxfer.errors import RefusedError
from support.cli import run_cli
from support.live import LiveServer
from support.request_log import Request, requests_of
from support.tus import dqr_upload_command


def remembered_file(env: dict[str, str]) -> Path:
    return Path(env["XDG_CACHE_HOME"]) / "dqrxfer" / "capabilities.json"


def upload(server: LiveServer, env: dict[str, str], path: Path, revision: int) -> list[Request]:
    """Upload ``path`` as ``revision``; the requests the server took for it."""
    before = len(requests_of(server.log()))
    done = run_cli(*dqr_upload_command(server.url, str(path), revision=revision), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("http"), done.stdout
    return requests_of(server.log())[before:]


def methods(requests: list[Request]) -> list[str]:
    return [request.method for request in requests]


def payload(root: Path, name: str = "summary.json") -> Path:
    path = root / name
    path.write_bytes(os.urandom(200_000))
    return path


def test_a_second_upload_to_the_same_server_sends_no_options(
    logged_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    first = upload(logged_server, client_env, payload(tmp_path), revision=1)
    # Asked once (the upload is made meanwhile: see test_client_first_contact.py).
    assert methods(first).count("OPTIONS") == 1
    saved = json.loads(remembered_file(client_env).read_text())
    assert f"{logged_server.url}/files/" in saved["servers"]

    second = upload(logged_server, client_env, payload(tmp_path, "other.json"), revision=2)
    assert "OPTIONS" not in methods(second)
    assert "POST" in methods(second) and "PATCH" in methods(second)


def rewrite_entry(env: dict[str, str], server: LiveServer, **changes: object) -> None:
    path = remembered_file(env)
    saved = json.loads(path.read_text())
    saved["servers"][f"{server.url}/files/"].update(changes)
    path.write_text(json.dumps(saved))


def test_an_out_of_date_answer_is_asked_again_and_the_upload_succeeds(
    logged_server: LiveServer, tmp_path: Path, client_env: dict[str, str]
) -> None:
    upload(logged_server, client_env, payload(tmp_path), revision=1)
    # As if the server had taken only 1,000 bytes when it was last asked.
    rewrite_entry(client_env, logged_server, max_size=1000)
    before = len(requests_of(logged_server.log()))
    done = run_cli(
        *dqr_upload_command(logged_server.url, str(payload(tmp_path, "b.json")), revision=2),
        env=client_env,
    )
    assert done.returncode == 0, done.stderr
    assert "capabilities were remembered from an earlier run: asked again" in done.stderr
    sent = methods(requests_of(logged_server.log())[before:])
    # (The retry, with the gate open, carries the small payload in its POST.)
    assert sent.count("OPTIONS") == 1 and "POST" in sent
    assert logged_server.published("b.json", revision=2).exists()
    # The fresh answer is remembered.
    saved = json.loads(remembered_file(client_env).read_text())
    assert saved["servers"][f"{logged_server.url}/files/"]["max_size"] != 1000


@pytest.mark.parametrize("how", ["expired", "unreadable"])
def test_an_expired_or_unreadable_answer_is_not_used(
    logged_server: LiveServer, tmp_path: Path, client_env: dict[str, str], how: str
) -> None:
    upload(logged_server, client_env, payload(tmp_path), revision=1)
    if how == "expired":
        rewrite_entry(client_env, logged_server, asked=time.time() - REMEMBERED_FOR - 60)
    else:
        remembered_file(client_env).write_text("{not json")
    again = upload(logged_server, client_env, payload(tmp_path, "b.json"), revision=2)
    assert methods(again).count("OPTIONS") == 1
    saved = json.loads(remembered_file(client_env).read_text())
    assert time.time() - saved["servers"][f"{logged_server.url}/files/"]["asked"] < 600


def test_which_refusals_a_stale_answer_explains() -> None:
    assert explained_by_stale(RefusedError(412, "Tus-Resumable: unsupported version"))
    assert explained_by_stale(RefusedError(413, "too large"))
    assert explained_by_stale(RefusedError(400, "Upload-Checksum: unsupported algorithm 'md5'"))
    assert explained_by_stale(RefusedError(400, "Upload-Concat: concatenation is off"))
    assert not explained_by_stale(RefusedError(400, "Upload-Metadata: graceid: not a GraceDB id"))
    assert not explained_by_stale(RefusedError(403, "llo may not upload to O4"))


# -- the first upload created while the server's copy is asked for -----------------------

MODES = {"hashed-first": [], "partials": ["--parallel", "2", "--chunk-size", "1"]}


def unfinished_uploads(server: LiveServer) -> list[Path]:
    """The server's uploads that are neither finished nor terminated."""
    return [
        state
        for state in (server.data_dir / "uploads").glob("*.info")
        if not state.with_suffix(".done").exists()
    ]


@pytest.mark.parametrize("mode", MODES)
def test_a_new_report_is_sent_on_the_upload_made_while_the_server_is_asked(
    logged_server: LiveServer, tmp_path: Path, client_env: dict[str, str], mode: str
) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(3_000_000))
    before = len(requests_of(logged_server.log()))
    done = run_cli(*dqr_upload_command(logged_server.url, *MODES[mode], str(path)), env=client_env)
    assert done.returncode == 0, done.stderr
    sent = requests_of(logged_server.log())[before:]
    creations = [r for r in sent if r.method == "POST"]
    # The partial uploads (or the one upload) and, for partials, the final one.
    assert len(creations) == (3 if mode == "partials" else 1)
    assert "DELETE" not in methods(sent)
    assert sum(r.length or 0 for r in sent if r.method == "PATCH") == 3_000_000
    assert logged_server.published("data.bin").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("mode", MODES)
def test_the_upload_made_while_the_server_is_asked_is_terminated_when_the_file_is_there(
    logged_server: LiveServer, tmp_path: Path, client_env: dict[str, str], mode: str
) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(3_000_000))
    first = run_cli(*dqr_upload_command(logged_server.url, *MODES[mode], str(path)), env=client_env)
    assert first.returncode == 0, first.stderr
    before = len(requests_of(logged_server.log()))
    again = run_cli(*dqr_upload_command(logged_server.url, *MODES[mode], str(path)), env=client_env)
    assert again.returncode == 0, again.stderr
    assert "skipped 1 file already on the server" in again.stderr
    assert again.stdout.strip() == first.stdout.strip()
    sent = requests_of(logged_server.log())[before:]
    assert "PATCH" not in methods(sent)  # not a byte of the payload
    made = [r for r in sent if r.method == "POST"]
    terminated = [r for r in sent if r.method == "DELETE" and r.status == 204]
    assert len(made) == len(terminated) <= 2
    assert unfinished_uploads(logged_server) == []
    assert not any(Path(client_env["XDG_CACHE_HOME"], "dqrxfer", "uploads").glob("*.json"))
