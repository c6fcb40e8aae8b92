"""Block checksums (``Upload-Block-Checksum``, our extension): a body cut in
the middle keeps exactly its whole verified blocks, a damaged block ends the
request with 460 and the blocks before it kept, a malformed header is a 400
naming the rule; a live server (gunicorn) for the cut, the app in process for
the rest.  Standard clients are unaffected: ``test_tus_clients.py`` runs
tuspy and tus-js-client against the same server."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from support.inprocess import InProcessServer, in_process_server
from support.live import LiveServer
from support.tus import (
    TUS,
    RawPatch,
    block_header,
    data_file,
    encode_metadata,
    new_upload,
    offset_of,
    patch,
    patch_until_unlocked,
    published,
    report_metadata,
    wait_for,
    write_config,
)

BLOCK = 64 * 1024
HEADER = "Upload-Block-Checksum"


def configured(root: Path) -> tuple[Path, Path]:
    data = root / "data"
    data.mkdir()
    return data, write_config(root / "config.toml", lock_timeout=1, read_timeout=8)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(*configured(tmp_path_factory.mktemp("tus-blocks-live"))).start()
    yield server
    server.discard()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    with in_process_server(*configured(tmp_path_factory.mktemp("tus-blocks"))) as app:
        yield app


def test_options_advertises_block_checksums(server: InProcessServer) -> None:
    response = requests.options(f"{server.url}/files/", timeout=10)
    assert "block-checksum" in response.headers["Tus-Extension"].split(",")


def test_a_cut_body_keeps_exactly_its_whole_verified_blocks(live: LiveServer) -> None:
    metadata = report_metadata()
    payload = os.urandom(10 * BLOCK + 1000)
    url = new_upload(live, len(payload), metadata=metadata)
    assert patch(url, 0, payload[:100]).status_code == 204
    body = payload[100:]
    raw = RawPatch(url, 100, len(body), headers={HEADER: block_header(body)})
    raw.send(body[: 3 * BLOCK + 5000])  # three whole blocks and part of the fourth
    wait_for(lambda: offset_of(url) == 100 + 3 * BLOCK, what="three verified blocks")
    raw.drop()

    # The connection is gone; the fourth block's bytes never count.
    kept = 100 + 3 * BLOCK
    wait_for(lambda: patch(url, kept + 1, b"x").status_code == 409, what="the lock released")
    assert offset_of(url) == kept
    assert data_file(live, url).read_bytes() == payload[:kept]

    rest = payload[kept:]
    response = patch_until_unlocked(url, kept, rest, headers={HEADER: block_header(rest)})
    assert response.status_code == 204, response.text
    assert published(live, metadata).read_bytes() == payload


def test_a_damaged_block_is_460_and_the_blocks_before_it_are_kept(
    server: InProcessServer,
) -> None:
    payload = os.urandom(5 * BLOCK + 123)
    url = new_upload(server, len(payload))
    header = block_header(payload)
    damaged = bytearray(payload)
    damaged[2 * BLOCK + 77] ^= 0xFF  # in the third block

    response = patch(url, 0, bytes(damaged), headers={HEADER: header})
    assert response.status_code == 460
    assert "block 2 does not match its crc32 digest" in response.text
    assert response.headers["Upload-Offset"] == str(2 * BLOCK)
    assert offset_of(url) == 2 * BLOCK
    assert data_file(server, url).read_bytes() == payload[: 2 * BLOCK]

    rest = payload[2 * BLOCK :]
    response = patch(url, 2 * BLOCK, rest, headers={HEADER: block_header(rest)})
    assert response.status_code == 204
    assert data_file(server, url).read_bytes() == payload


def test_a_short_last_block_and_other_algorithms(server: InProcessServer) -> None:
    payload = os.urandom(2 * BLOCK + 10)
    url = new_upload(server, len(payload))
    digests = b"".join(
        hashlib.sha256(payload[start : start + BLOCK]).digest()
        for start in range(0, len(payload), BLOCK)
    )
    header = f"sha256 {BLOCK} {base64.b64encode(digests).decode()}"
    response = patch(url, 0, payload, headers={HEADER: header})
    assert response.status_code == 204 and response.headers["Upload-Offset"] == str(len(payload))
    assert data_file(server, url).read_bytes() == payload


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("crc32 65536", "must be '<algorithm> <block size> <base64 digests>'"),
        ("sha512 65536 AAAA", "unsupported algorithm 'sha512'"),
        ("crc32 lots AAAAAA==", "block size 'lots' is not a number"),
        ("crc32 1024 AAAAAA==", "block size 1024 is outside 65536-16777216 bytes"),
        ("crc32 65536 !!!!", "digests are not valid base64"),
        ("crc32 65536 AAAAAA==", "needs 2 crc32 digests (8 bytes), not 4 bytes"),
    ],
)
def test_an_unusable_header_is_400_naming_the_rule(
    server: InProcessServer, header: str, message: str
) -> None:
    url = new_upload(server, BLOCK + 1)
    response = patch(url, 0, os.urandom(BLOCK + 1), headers={HEADER: header})
    assert response.status_code == 400
    assert response.text.startswith(f"{HEADER}:") and message in response.text
    assert offset_of(url) == 0 and data_file(server, url).stat().st_size == 0


def test_block_and_whole_body_checksums_together_are_400(server: InProcessServer) -> None:
    url = new_upload(server, 10)
    body = b"0123456789"
    whole = "crc32 " + base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    response = patch(url, 0, body, headers={HEADER: block_header(body), "Upload-Checksum": whole})
    assert response.status_code == 400 and "may not be sent with Upload-Checksum" in response.text
    assert offset_of(url) == 0


def test_creation_with_upload_takes_block_checksums(server: InProcessServer) -> None:
    payload = os.urandom(3 * BLOCK)
    damaged = payload[:BLOCK] + b"\0" * BLOCK + payload[2 * BLOCK :]
    response = requests.post(
        f"{server.url}/files/",
        headers={
            **TUS,
            "Upload-Length": str(len(payload)),
            "Upload-Metadata": encode_metadata(report_metadata()),
            "Content-Type": "application/offset+octet-stream",
            HEADER: block_header(payload),
        },
        data=damaged,
        timeout=10,
    )
    assert response.status_code == 460
    url = response.headers["Location"]
    assert response.headers["Upload-Offset"] == str(BLOCK)
    assert offset_of(url) == BLOCK
