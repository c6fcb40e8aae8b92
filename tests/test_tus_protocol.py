"""tus 1.0.0 core protocol and the creation, creation-with-upload,
creation-defer-length, termination and checksum extensions, rule by rule,
against the app in process (support.inprocess); the keep-alive and pipelining
rules against a live server (gunicorn, two workers)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import time
import zlib
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from support.inprocess import InProcessServer, in_process_server
from support.live import LiveServer
from support.tus import (
    OCTETS,
    TUS,
    create,
    data_file,
    encode_metadata,
    head,
    new_upload,
    offset_of,
    patch,
    published,
    record,
    report_metadata,
    upload_files,
    upload_id,
    write_config,
)

MAX_SIZE = 4 * 1024 * 1024
EXPIRY = 3600
EXTENSIONS = {
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "checksum",
    "expiration",
    "concatenation",
    "concatenation-unfinished",
    "block-checksum",
}


def configured(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[Path, Path]:
    """A data directory and this module's config."""
    root = tmp_path_factory.mktemp(name)
    data = root / "data"
    data.mkdir()
    config = write_config(
        root / "config.toml", max_upload_size=MAX_SIZE, upload_expiry=EXPIRY, lock_timeout=2
    )
    return data, config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    with in_process_server(*configured(tmp_path_factory, "tus-protocol")) as app:
        yield app


@pytest.fixture(scope="module")
def socket_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """gunicorn in front: connections and the bytes on them are its part."""
    live = LiveServer(*configured(tmp_path_factory, "tus-protocol-live")).start()
    yield live
    live.discard()


# -- OPTIONS and versions -------------------------------------------------------------


def test_options_advertises_version_extensions_max_size_and_algorithms(
    server: InProcessServer,
) -> None:
    for path in ("/files/", "/files/0123abcd"):
        response = requests.options(server.url + path, timeout=10)  # no Tus-Resumable needed
        assert response.status_code == 204
        assert response.headers["Tus-Version"] == "1.0.0"
        assert set(response.headers["Tus-Extension"].split(",")) == EXTENSIONS
        assert response.headers["Tus-Max-Size"] == str(MAX_SIZE)
        algorithms = set(response.headers["Tus-Checksum-Algorithm"].split(","))
        assert algorithms == {"sha1", "md5", "sha256", "crc32"}


@pytest.mark.parametrize("version", [None, "0.2.2", "1.0", "2.0.0"])
def test_missing_or_unsupported_version_is_412_and_nothing_is_processed(
    server: InProcessServer, version: str | None
) -> None:
    url = new_upload(server, 10)
    wrong = {} if version is None else {"Tus-Resumable": version}
    before = upload_files(server)

    response = requests.post(
        f"{server.url}/files/",
        headers={
            **wrong,
            "Upload-Length": "5",
            "Upload-Metadata": encode_metadata(report_metadata()),
        },
        timeout=10,
    )
    assert response.status_code == 412
    assert response.headers["Tus-Version"] == "1.0.0"
    assert "Tus-Resumable" in response.text
    assert upload_files(server) == before

    sent = {**wrong, "Content-Type": OCTETS, "Upload-Offset": "0"}
    response = requests.patch(url, headers=sent, data=b"12345", timeout=10)
    assert response.status_code == 412 and response.headers["Tus-Version"] == "1.0.0"
    assert offset_of(url) == 0 and data_file(server, url).stat().st_size == 0

    response = requests.head(url, headers=wrong, timeout=10)
    assert response.status_code == 412 and response.headers["Tus-Version"] == "1.0.0"

    response = requests.delete(url, headers=wrong, timeout=10)
    assert response.status_code == 412
    assert offset_of(url) == 0


# -- creation -------------------------------------------------------------------------


def test_creation_gives_an_absolute_location_and_head_reports_the_upload(
    server: InProcessServer,
) -> None:
    metadata = report_metadata(subdir="plots/é")
    response = create(server, 1234, metadata)
    assert response.status_code == 201
    location = response.headers["Location"]
    assert location.startswith(f"{server.url}/files/")
    assert response.headers["Tus-Resumable"] == "1.0.0"

    info = head(location)
    assert info.status_code == 200
    assert info.headers["Upload-Offset"] == "0"
    assert info.headers["Upload-Length"] == "1234"
    assert "Upload-Defer-Length" not in info.headers
    assert info.headers["Cache-Control"] == "no-store"
    assert info.headers["Tus-Resumable"] == "1.0.0"
    pairs = dict(pair.split(" ") for pair in info.headers["Upload-Metadata"].split(","))
    decoded = {key: base64.b64decode(value).decode() for key, value in pairs.items()}
    assert decoded == metadata
    assert info.content == b""


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "", "0x10", "1e3", "99999999999999999999"])
def test_bad_upload_length_is_400(server: InProcessServer, value: str) -> None:
    before = upload_files(server)
    response = requests.post(
        f"{server.url}/files/",
        headers={
            **TUS,
            "Upload-Length": value,
            "Upload-Metadata": encode_metadata(report_metadata()),
        },
        timeout=10,
    )
    assert response.status_code == 400
    assert response.text.startswith("Upload-Length:")
    assert upload_files(server) == before


def test_length_rules_at_creation(server: InProcessServer) -> None:
    before = upload_files(server)
    metadata = encode_metadata(report_metadata())
    cases = [
        ({}, 400, "Upload-Length: is required"),
        ({"Upload-Length": "5", "Upload-Defer-Length": "1"}, 400, "Upload-Defer-Length:"),
        ({"Upload-Defer-Length": "2"}, 400, "Upload-Defer-Length: must be 1"),
        ({"Upload-Length": str(MAX_SIZE + 1)}, 413, "Upload-Length exceeds"),
    ]
    for headers, status, message in cases:
        response = requests.post(
            f"{server.url}/files/",
            headers={**TUS, "Upload-Metadata": metadata, **headers},
            timeout=10,
        )
        assert response.status_code == status, (headers, response.text)
        assert response.text.startswith(message), (headers, response.text)
    assert upload_files(server) == before
    assert create(server, MAX_SIZE).status_code == 201


def test_zero_length_upload_completes_at_once(server: InProcessServer) -> None:
    metadata = report_metadata()
    response = create(server, 0, metadata)
    assert response.status_code == 201
    url = response.headers["Location"]
    assert response.headers["Upload-Offset"] == "0"
    assert "Upload-Expires" not in response.headers  # finished: never expires
    info = head(url)
    assert (info.headers["Upload-Offset"], info.headers["Upload-Length"]) == ("0", "0")
    assert record(server, url)["state"] == "published"
    assert published(server, metadata).read_bytes() == b""


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("filename Zm9v,filename YmFy", "duplicate key"),
        ("filename !!!!", "is not base64"),
        ("filename Zm9v YmFy", "malformed pair"),
        ("file(name) Zm9v", "invalid key"),
        ("filename Zm9v,,kind ZmlsZQ==", "malformed pair"),
        ("filename //79", "not base64-encoded UTF-8"),
    ],
)
def test_malformed_metadata_is_400(server: InProcessServer, header: str, message: str) -> None:
    before = upload_files(server)
    response = requests.post(
        f"{server.url}/files/",
        headers={**TUS, "Upload-Length": "5", "Upload-Metadata": header},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.text.startswith("Upload-Metadata:") and message in response.text
    assert upload_files(server) == before


# -- HEAD ------------------------------------------------------------------------------


def test_head_of_unknown_or_invalid_upload_is_404(server: InProcessServer) -> None:
    assert head(f"{server.url}/files/{'0' * 32}").status_code == 404
    assert head(f"{server.url}/files/not-an-id").status_code == 404
    assert head(f"{server.url}/files/..%2f..%2fdqrxfer.sqlite").status_code == 404


# -- PATCH -------------------------------------------------------------------------------


def test_patch_appends_and_answers_offset_and_expiry(server: InProcessServer) -> None:
    metadata = report_metadata()
    payload = os.urandom(300_000)
    url = new_upload(server, len(payload), metadata=metadata)
    response = patch(url, 0, payload[:100_000])
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "100000"
    expires = parsedate_to_datetime(response.headers["Upload-Expires"]).timestamp()
    assert abs(expires - (time.time() + EXPIRY)) < 120
    assert response.headers["Upload-Expires"].endswith(" GMT")
    assert offset_of(url) == 100_000

    response = patch(url, 100_000, payload[100_000:])
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == str(len(payload))
    assert "Upload-Expires" not in response.headers
    assert published(server, metadata).read_bytes() == payload
    # An empty PATCH at the end is harmless and finishes nothing twice.
    assert patch(url, len(payload), b"").status_code == 204


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "text/plain"])
def test_patch_with_another_content_type_is_415(
    server: InProcessServer, content_type: str | None
) -> None:
    url = new_upload(server, 10)
    headers = {**TUS, "Upload-Offset": "0"}
    if content_type:
        headers["Content-Type"] = content_type
    response = requests.patch(url, headers=headers, data=b"12345", timeout=10)
    assert response.status_code == 415
    assert offset_of(url) == 0


def test_patch_offset_must_match_and_a_mismatch_writes_nothing(server: InProcessServer) -> None:
    url = new_upload(server, 10)
    assert patch(url, 0, b"abcd").status_code == 204
    for wrong in (0, 3, 5, 10):
        response = patch(url, wrong, b"xyz")
        assert response.status_code == 409, wrong
        assert "does not match the current offset 4" in response.text
    assert data_file(server, url).read_bytes() == b"abcd"
    for bad in ("-1", "x", ""):
        response = patch(url, 0, b"xyz", headers={"Upload-Offset": bad})
        assert response.status_code == 400 and response.text.startswith("Upload-Offset:")
    response = requests.patch(url, headers={**TUS, "Content-Type": OCTETS}, data=b"xyz", timeout=10)
    assert response.status_code == 400 and "Upload-Offset: is required" in response.text
    assert data_file(server, url).read_bytes() == b"abcd"


def test_patch_beyond_length_is_413_and_corrupts_nothing(server: InProcessServer) -> None:
    url = new_upload(server, 10)
    assert patch(url, 0, b"abcd").status_code == 204
    response = patch(url, 4, b"0123456789")
    assert response.status_code == 413
    assert data_file(server, url).read_bytes() == b"abcd"

    def chunked(*parts: bytes) -> requests.Response:
        """A PATCH at offset 4 of ``parts``, with no Content-Length: an
        overrun shows late."""
        headers = {**TUS, "Content-Type": OCTETS, "Upload-Offset": "4"}
        return requests.patch(url, headers=headers, data=iter(parts), timeout=10)

    response = chunked(b"efg", b"hijklmn")
    assert response.status_code == 413
    assert data_file(server, url).read_bytes() == b"abcd"
    assert offset_of(url) == 4

    response = chunked(b"efg", b"hij")
    assert response.status_code == 204 and response.headers["Upload-Offset"] == "10"
    assert data_file(server, url).read_bytes() == b"abcdefghij"


def test_patch_of_unknown_upload_is_404(server: InProcessServer) -> None:
    assert patch(f"{server.url}/files/{'a' * 32}", 0, b"x").status_code == 404


# -- creation-defer-length ---------------------------------------------------------------


def test_deferred_length_is_declared_by_a_later_patch(server: InProcessServer) -> None:
    metadata = report_metadata()
    url = new_upload(server, None, metadata=metadata)
    info = head(url)
    assert info.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in info.headers
    assert patch(url, 0, b"hello ").status_code == 204
    assert head(url).headers["Upload-Defer-Length"] == "1"

    response = patch(url, 6, b"", headers={"Upload-Length": "3"})
    assert response.status_code == 400 and "less than the 6 bytes" in response.text
    response = patch(url, 6, b"", headers={"Upload-Length": str(MAX_SIZE + 1)})
    assert response.status_code == 413

    response = patch(url, 6, b"world", headers={"Upload-Length": "11"})
    assert response.status_code == 204 and response.headers["Upload-Offset"] == "11"
    info = head(url)
    assert info.headers["Upload-Length"] == "11" and "Upload-Defer-Length" not in info.headers
    assert published(server, metadata).read_bytes() == b"hello world"
    response = patch(url, 11, b"", headers={"Upload-Length": "12"})
    assert response.status_code == 400 and "Upload-Length: is already 11" in response.text


# -- creation-with-upload ------------------------------------------------------------------


def test_creation_with_upload_stores_the_body(server: InProcessServer) -> None:
    metadata = report_metadata()
    response = create(server, 10, metadata, body=b"01234")
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "5"
    url = response.headers["Location"]
    assert patch(url, 5, b"56789").status_code == 204
    assert published(server, metadata).read_bytes() == b"0123456789"

    whole = report_metadata()
    response = create(server, 3, whole, body=b"abc")
    assert response.status_code == 201 and response.headers["Upload-Offset"] == "3"
    assert "Dqr-Report-Url" in response.headers
    assert published(server, whole).read_bytes() == b"abc"


def test_creation_with_upload_refusals(server: InProcessServer) -> None:
    before = upload_files(server)
    response = create(server, 3, body=b"abcdef")
    assert response.status_code == 413
    response = create(server, 10, body=b"abc", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert upload_files(server) == before

    digest = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    response = create(server, 10, body=b"abc", headers={"Upload-Checksum": f"sha1 {digest}"})
    assert response.status_code == 460
    url = response.headers["Location"]  # the upload exists: the client may go on
    assert offset_of(url) == 0
    assert patch(url, 0, b"abc").status_code == 204


# -- checksum -----------------------------------------------------------------------------


def digest_header(algorithm: str, data: bytes) -> str:
    if algorithm == "crc32":
        raw = zlib.crc32(data).to_bytes(4, "big")
    else:
        raw = hashlib.new(algorithm, data).digest()
    return f"{algorithm} {base64.b64encode(raw).decode()}"


@pytest.mark.parametrize("algorithm", ["sha1", "md5", "sha256", "crc32"])
def test_checksummed_chunks_are_verified(server: InProcessServer, algorithm: str) -> None:
    payload = os.urandom(200_000)
    url = new_upload(server, len(payload))
    first, second = payload[:150_000], payload[150_000:]
    response = patch(url, 0, first, headers={"Upload-Checksum": digest_header(algorithm, first)})
    assert response.status_code == 204 and response.headers["Upload-Offset"] == "150000"

    bad = digest_header(algorithm, second + b"x")
    response = patch(url, 150_000, second, headers={"Upload-Checksum": bad})
    assert response.status_code == 460
    assert algorithm in response.text
    assert offset_of(url) == 150_000
    assert data_file(server, url).stat().st_size == 150_000

    good = digest_header(algorithm, second)
    response = patch(url, 150_000, second, headers={"Upload-Checksum": good})
    assert response.status_code == 204
    assert data_file(server, url).read_bytes() == payload


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("sha512 " + base64.b64encode(b"x" * 64).decode(), "unsupported algorithm 'sha512'"),
        ("sha1", "must be '<algorithm> <base64 digest>'"),
        ("sha1 !!!", "not valid base64"),
        ("sha1 " + base64.b64encode(b"short").decode(), "a sha1 digest has 20 bytes"),
    ],
)
def test_unusable_checksum_header_is_400_and_the_chunk_discarded(
    server: InProcessServer, header: str, message: str
) -> None:
    url = new_upload(server, 10)
    response = patch(url, 0, b"abc", headers={"Upload-Checksum": header})
    assert response.status_code == 400
    assert response.text.startswith("Upload-Checksum:") and message in response.text
    assert offset_of(url) == 0 and data_file(server, url).stat().st_size == 0


# -- termination ------------------------------------------------------------------------------


def test_termination_removes_the_upload(server: InProcessServer) -> None:
    url = new_upload(server, 10)
    assert patch(url, 0, b"abc").status_code == 204
    response = requests.delete(url, headers=TUS, timeout=10)
    assert response.status_code == 204
    assert head(url).status_code == 404
    assert patch(url, 3, b"def").status_code == 404
    assert requests.delete(url, headers=TUS, timeout=10).status_code == 404
    ident = upload_id(url)
    assert not any(name.startswith(ident) for name in upload_files(server))
    assert record(server, url)["state"] == "terminated"


# -- X-HTTP-Method-Override ------------------------------------------------------------------


def test_method_override_on_post(server: InProcessServer) -> None:
    url = new_upload(server, 6)
    headers = {**TUS, "Content-Type": OCTETS, "Upload-Offset": "0"}
    response = requests.post(
        url, headers={**headers, "X-HTTP-Method-Override": "PATCH"}, data=b"abc", timeout=10
    )
    assert response.status_code == 204 and response.headers["Upload-Offset"] == "3"
    response = requests.post(url, headers={**TUS, "X-HTTP-Method-Override": "HEAD"}, timeout=10)
    assert response.status_code == 200 and response.headers["Upload-Offset"] == "3"
    response = requests.post(url, headers=headers, data=b"def", timeout=10)
    assert response.status_code == 405
    assert offset_of(url) == 3
    response = requests.post(url, headers={**TUS, "X-HTTP-Method-Override": "DELETE"}, timeout=10)
    assert response.status_code == 204
    assert head(url).status_code == 404
    # The override is honoured on POST only.
    other = new_upload(server, 6)
    response = requests.patch(
        other,
        headers={**headers, "X-HTTP-Method-Override": "DELETE"},
        data=b"abc",
        timeout=10,
    )
    assert response.status_code == 204 and offset_of(other) == 3


def test_patches_on_one_keep_alive_connection_and_pipelined(socket_server: LiveServer) -> None:
    payload = os.urandom(600_000)
    url = new_upload(socket_server, len(payload))
    with requests.Session() as session:
        for start in (0, 200_000):
            response = session.patch(
                url,
                headers={**TUS, "Content-Type": OCTETS, "Upload-Offset": str(start)},
                data=payload[start : start + 200_000],
                timeout=30,
            )
            assert response.status_code == 204
            assert response.headers["Connection"] == "keep-alive"
    # Two requests in one write: the second one's bytes arrive with the first.
    path = urlsplit(url).path

    def request(start: int, body: bytes) -> bytes:
        head_lines = (
            f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            f"Content-Type: {OCTETS}\r\nUpload-Offset: {start}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head_lines.encode() + body

    with socket.create_connection(("127.0.0.1", socket_server.port), timeout=30) as sock:
        # A tiny first body: the server reads the second request ahead with it.
        first, second = payload[400_000:400_010], payload[400_010:]
        sock.sendall(request(400_000, first) + request(400_010, second))
        answers = b""
        while answers.count(b"\r\n\r\n") < 2:
            chunk = sock.recv(65536)
            assert chunk, answers
            answers += chunk
    statuses = [line.split()[1] for line in answers.split(b"\r\n") if line.startswith(b"HTTP/1.1")]
    assert statuses == [b"204", b"204"], answers
    assert data_file(socket_server, url).read_bytes() == payload
