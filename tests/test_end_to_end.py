"""One report file travels from dqr-upload to the report tree, end to end:
real server process (gunicorn), real CLI process, real database."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import requests
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from dqrxfer.server.db import Report, ReportFile, Upload
from support.cli import run_cli
from support.live import LiveServer
from support.tus import dqr_upload_command


def upload_args(server: LiveServer, *paths: Path, **options: str) -> list[str]:
    args = {"project": "O4", "graceid": "S230518h", "uploader": "llo", "revision": "1"}
    args.update(options)
    command = ["dqr-upload", "-s", server.url]
    for key, value in args.items():
        command += [f"--{key}", value]
    return command + [str(path) for path in paths]


def test_file_lands_byte_identical_recorded_and_linked(
    live_server: LiveServer, tmp_path: Path
) -> None:
    payload = tmp_path / "data.json"
    payload.write_bytes(os.urandom(3 * 1024 * 1024 + 17))

    result = run_cli(
        *upload_args(live_server, payload, subdir="tier1", uploader="LHO"), "--chunk-size", "1"
    )

    assert result.returncode == 0, result.stderr
    report_url = f"{live_server.url}/reports/O4/S230518h_dir/S230518h_lho_1/"
    assert result.stdout.strip() == report_url
    landed = live_server.data_dir / "reports/O4/S230518h_dir/S230518h_lho_1/tier1/data.json"
    assert landed.read_bytes() == payload.read_bytes()
    assert "INFO:dqr-xfer:Uploaded" in result.stderr
    assert "Elapsed time:" in result.stderr

    engine = create_engine(f"sqlite:///{live_server.data_dir / 'dqrxfer.sqlite'}")
    with Session(engine) as session:
        report = session.scalars(select(Report)).one()
        assert (report.site, report.revision, report.project) == ("lho", 1, "O4")
        assert report.file_count == 1 and report.total_bytes == payload.stat().st_size
        row = session.scalars(select(ReportFile)).one()
        assert row.relpath == "tier1/data.json"
        upload = session.scalars(select(Upload)).one()
        assert upload.state == "published" and upload.report_id == report.id
    engine.dispose()

    links = requests.get(f"{live_server.url}/api/v1/events/S230518h/reports", timeout=10).json()
    assert [(r["site"], r["revision"], r["url"]) for r in links["reports"]] == [
        ("lho", 1, report_url)
    ]
    served = requests.get(report_url + "tier1/data.json", timeout=10)
    assert served.content == payload.read_bytes()


def test_several_files_and_sites_in_one_event(live_server: LiveServer, tmp_path: Path) -> None:
    first, second = tmp_path / "index.html", tmp_path / "summary.json"
    first.write_text("<html>llo</html>")
    second.write_text("{}")
    assert run_cli(*upload_args(live_server, first, second)).returncode == 0
    assert run_cli(*upload_args(live_server, first, uploader="virgo", revision="2")).returncode == 0
    links = requests.get(f"{live_server.url}/api/v1/events/S230518h/reports", timeout=10).json()
    summary = [(r["site"], r["revision"], r["file_count"]) for r in links["reports"]]
    assert summary == [("llo", 1, 2), ("virgo", 2, 1)]


def test_unknown_event_is_an_empty_list_and_bad_graceid_a_400(live_server: LiveServer) -> None:
    response = requests.get(f"{live_server.url}/api/v1/events/S990101a/reports", timeout=10)
    assert response.status_code == 200 and response.json()["reports"] == []
    response = requests.get(f"{live_server.url}/api/v1/events/nonsense/reports", timeout=10)
    assert response.status_code == 400 and response.json()["error"].startswith("graceid:")


def encode(metadata: dict[str, str]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items()
    )


GOOD = {
    "project": "O4",
    "graceid": "S230518h",
    "uploader": "llo",
    "revision": "1",
    "filename": "index.html",
    "kind": "file",
}


def create(server: LiveServer, metadata: dict[str, str], length: int = 10) -> requests.Response:
    return requests.post(
        f"{server.url}/files/",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(length),
            "Upload-Metadata": encode(metadata),
        },
        timeout=10,
    )


BAD_METADATA = [
    ({"project": "O5"}, "project: must be one of"),
    ({"graceid": "S2305h"}, "graceid: must be a superevent"),
    ({"uploader": "geo"}, "uploader: must be one of"),
    ({"revision": "1.5"}, "revision: must be a non-negative integer"),
    ({"revision": "-1"}, "revision: must be a non-negative integer"),
    ({"subdir": "../../etc"}, "subdir: path components may not be empty, '.' or '..'"),
    ({"subdir": "/etc"}, "subdir: must be a relative path"),
    ({"subdir": "a\x01b"}, "subdir: may not contain control or NUL characters"),
    ({"filename": "../x"}, "filename: must be a single name"),
    ({"kind": "zip"}, "kind: must be one of file, tar"),
    ({"sha256": "xyz"}, "sha256: must be 64 hexadecimal characters"),
]


def test_bad_metadata_is_refused_with_field_and_rule_and_leaves_nothing(
    live_server: LiveServer,
) -> None:
    for change, message in BAD_METADATA:
        response = create(live_server, {**GOOD, **change})
        assert response.status_code == 400, (change, response.text)
        assert message in response.text, (change, response.text)
    missing = dict(GOOD)
    del missing["graceid"]
    response = create(live_server, missing)
    assert response.status_code == 400 and "graceid: is required" in response.text

    uploads = live_server.data_dir / "uploads"
    assert [p.name for p in uploads.iterdir() if p.is_file()] == []
    assert not (live_server.data_dir / "reports").exists()
    engine = create_engine(f"sqlite:///{live_server.data_dir / 'dqrxfer.sqlite'}")
    with Session(engine) as session:
        assert session.scalars(select(Upload)).all() == []
    engine.dispose()


def test_cli_shows_the_servers_projects_and_exits_2(
    live_server: LiveServer, tmp_path: Path
) -> None:
    payload = tmp_path / "index.html"
    payload.write_text("x")
    result = run_cli(*upload_args(live_server, payload, project="O5"))
    assert result.returncode == 2
    assert (
        "project 'O5': the server has no such project (it has MDC, O4, personal, replay)"
        in result.stderr
    )


def test_cli_refuses_bad_options_locally_with_exit_2(
    live_server: LiveServer, tmp_path: Path
) -> None:
    payload = tmp_path / "index.html"
    payload.write_text("x")
    result = run_cli(*upload_args(live_server, payload, graceid="S12"))
    assert result.returncode == 2
    assert "ERROR:dqr-xfer:graceid: must be" in result.stderr


def test_server_down_is_exit_5(tmp_path: Path) -> None:
    payload = tmp_path / "index.html"
    payload.write_text("x")
    from support.live import free_port

    result = run_cli(
        *dqr_upload_command(
            f"http://127.0.0.1:{free_port()}", "--retries", "2", "--retry-wait", "0.1", str(payload)
        ),
    )
    assert result.returncode == 5, result.stderr
    assert "gave up after 2 retries" in result.stderr
