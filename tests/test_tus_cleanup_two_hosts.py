"""``dqrxfer-server cleanup`` run on two hosts at once (docs/operators/scaling.md):
an upload the other run holds is skipped, not removed under it, and left for
the next run; one the other run removed is passed over.  With PostgreSQL, as
several hosts use: the other host's hold is an advisory lock of its own."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from dqrxfer.server.tus.pglocker import PostgresLocker
from support.cli import run_cli
from support.live import LiveServer
from support.tus import data_file, new_upload, patch, report_metadata, upload_id, write_config

pytestmark = pytest.mark.postgres


def cleanup(server: LiveServer) -> tuple[int, str, str]:
    assert server.config is not None
    result = run_cli(
        "dqrxfer-server", "cleanup", "--config", str(server.config),
        "--data-dir", str(server.data_dir),
    )  # fmt: skip
    return result.returncode, result.stdout, result.stderr


def test_an_upload_the_other_host_holds_is_skipped_and_left_for_the_next_run(
    tmp_path: Path, data_dir: Path, postgres_url: str
) -> None:
    config = write_config(tmp_path / "config.toml", database_url=postgres_url)
    server = LiveServer(data_dir, config=config).start()
    other_host = PostgresLocker(create_engine(postgres_url))
    try:
        url = new_upload(server, 1000, metadata=report_metadata())
        assert patch(url, 0, b"x" * 500).status_code == 204
        week_ago = time.time() - 8 * 24 * 3600
        os.utime(data_file(server, url), (week_ago, week_ago))  # expired
        identifier = upload_id(url)

        with other_host.lock(identifier):  # the other host's cleanup is on it
            status, out, err = cleanup(server)
            assert status == 0, err
            assert identifier in err and "busy" in err
            assert identifier not in out
            assert data_file(server, url).exists()

        status, out, err = cleanup(server)
        assert status == 0 and identifier in out, out + err
        assert not data_file(server, url).exists()

        # Removed once: the run after it does not name it again.
        status, out, err = cleanup(server)
        assert status == 0 and identifier not in out + err
    finally:
        other_host.dispose()
        server.stop()
