"""Real tus clients against a live server: tuspy (Python) and tus-js-client
(Node, from npm; installed by ``ops/dev/bootstrap.sh --test``).  Whatever the
chunking, checksums, concatenation or deferred length, the stored and the
published bytes are the client's bytes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tusclient.client import TusClient

from support.live import LiveServer
from support.tus import (
    data_file,
    head,
    published,
    record,
    report_metadata,
    upload_files,
    write_config,
)

JS_DIR = Path(__file__).parent / "js"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("tus-clients")
    data = root / "data"
    data.mkdir()
    live = LiveServer(data, config=write_config(root / "config.toml", upload_expiry=3600))
    live.start()
    yield live
    live.discard()


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("payload") / "payload.bin"
    path.write_bytes(os.urandom(5 * 1024 * 1024 + 123))
    return path


def check_stored(server: LiveServer, url: str, metadata: dict[str, str], payload: Path) -> None:
    expected = payload.read_bytes()
    info = head(url)
    assert info.headers["Upload-Offset"] == info.headers["Upload-Length"] == str(len(expected))
    assert data_file(server, url).read_bytes() == expected
    assert published(server, metadata).read_bytes() == expected
    assert record(server, url)["state"] == "published"


@pytest.mark.parametrize(
    ("chunk_size", "checksum"),
    [(64 * 1024, True), (1024 * 1024, True), (1024 * 1024, False), (16 * 1024 * 1024, True)],
)
def test_tuspy_uploads_byte_identical(
    server: LiveServer, payload: Path, chunk_size: int, checksum: bool
) -> None:
    metadata = report_metadata()
    uploader = TusClient(f"{server.url}/files/").uploader(
        file_path=str(payload),
        chunk_size=chunk_size,
        metadata=metadata,
        upload_checksum=checksum,
    )
    uploader.upload()
    assert uploader.url is not None
    check_stored(server, uploader.url, metadata, payload)


def node_upload(server: LiveServer, payload: Path, **options: object) -> str:
    result = run_node(server, payload, **options)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["url"]


def run_node(
    server: LiveServer, payload: Path, **options: object
) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "tus-js-client").is_dir():
        message = "Node.js and tests/js/node_modules are needed: run ops/dev/bootstrap.sh --test"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    settings = {"endpoint": f"{server.url}/files/", "path": str(payload), **options}
    return subprocess.run(
        [node, str(JS_DIR / "tus-upload.cjs"), json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=JS_DIR,
    )


@pytest.mark.parametrize(
    "options",
    [
        {"chunkSize": 1024 * 1024},
        {},  # one PATCH with the whole file
        {"source": "buffer", "chunkSize": 700_000, "uploadDataDuringCreation": True},
        {"source": "stream", "chunkSize": 1024 * 1024, "uploadLengthDeferred": True},
        {"parallelUploads": 3},
    ],
    ids=["chunks", "whole", "creation-with-upload", "deferred-length", "concatenation"],
)
def test_tus_js_client_uploads_byte_identical(
    server: LiveServer, payload: Path, options: dict[str, object]
) -> None:
    metadata = report_metadata()
    if options.get("parallelUploads"):
        # The partial uploads carry the report metadata too (checked and authorized).
        options = {**options, "metadataForPartialUploads": metadata}
    url = node_upload(server, payload, metadata=metadata, **options)
    check_stored(server, url, metadata, payload)
    if options.get("parallelUploads"):
        assert head(url).headers["Upload-Concat"].startswith("final;")


def test_tus_js_client_parallel_uploads_without_partial_metadata_are_refused(
    server: LiveServer, payload: Path
) -> None:
    """tus-js-client sends no metadata with partial uploads unless told
    (``metadataForPartialUploads``): the server refuses them, saying why."""
    before = upload_files(server)
    result = run_node(server, payload, metadata=report_metadata(), parallelUploads=2)
    assert result.returncode == 1
    assert "response code: 400" in result.stderr
    assert "project: is required (a partial upload, Upload-Concat: partial" in result.stderr
    assert upload_files(server) == before
