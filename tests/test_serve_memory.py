"""What ``serve``'s processes import: the memory every worker shares with the master.

The master builds the app before it forks the workers (``preload_app``), so a
module it imports is held once for the whole server, and one a worker imports
later is held by each worker on its own.  Modules only other commands use must
stay out of the master altogether: it would keep them, shared, for nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import requests

from support.live import with_gunicorn_config
from support.tus import TUS, encode_metadata, report_metadata

#: A gunicorn settings file whose hooks write the modules each process has
#: imported: the master once its workers may start (``when_ready``), a worker
#: before answering a ping (so the file is whole when the ping's answer comes).
HOOKS = """
import json, os, sys

def _write(name):
    path = os.path.join({directory!r}, name)
    with open(path + ".tmp", "w") as out:
        json.dump(sorted(sys.modules), out)
    os.replace(path + ".tmp", path)

def when_ready(server):
    _write("master.json")

def pre_request(worker, req):
    if req.path == "/api/v1/ping":
        _write("worker.json")
"""

#: Imported by the schema's upgrade and check (Alembic, and Mako and Pygments
#: through it), which ``serve`` runs in a child process: no worker needs them.
COMMAND_ONLY = ("alembic", "mako", "pygments")


def _modules(path: Path) -> set[str]:
    return set(json.loads(path.read_text()))


def _wait_for(path: Path, timeout: float = 30.0) -> Path:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} was never written"
        time.sleep(0.02)
    return path


def test_workers_import_nothing_the_master_has_not_and_the_master_no_alembic(
    tmp_path: Path,
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    live = with_gunicorn_config(tmp_path, HOOKS.format(directory=str(hooks))).start()
    try:
        # Serve what the workers serve most: an upload, its report published.
        body = b"x" * 1000
        created = requests.post(
            f"{live.url}/files/",
            data=body,
            headers={
                **TUS,
                "Upload-Length": str(len(body)),
                "Upload-Metadata": encode_metadata(report_metadata()),
                "Content-Type": "application/offset+octet-stream",
            },
            timeout=30,
        )
        assert created.status_code == 201, created.text
        assert created.headers["Upload-Offset"] == str(len(body))
        assert requests.get(f"{live.url}/api/v1/ping", timeout=30).status_code == 200
        master = _modules(_wait_for(hooks / "master.json"))
        worker = _modules(hooks / "worker.json")
    finally:
        live.stop()

    assert "dqrxfer.server.app" in master  # the hooks did run where meant
    assert not [name for name in master if name.split(".")[0] in COMMAND_ONLY]
    assert sorted(worker - master) == []
