"""Upload bodies as file regions: the same bytes as reading the payload, sent
with ``sendfile`` on plain HTTP, from a reused buffer over TLS, and as byte
blocks by any other ``http.client`` connection (behind a proxy, say)."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dqrxfer.packing import DirectoryPayload
from dqrxfer.payload import FileRegion
from dqrxfer.sendfile import SendfileHTTPConnection, SendfileHTTPSConnection
from dqrxfer.session import make_session
from dqrxfer.transport import MIN_SEND, REGION_PIECE, SliceBody, TusClient
from support.live import LiveServer
from support.proxies import behind_nginx, needs_nginx
from support.tus import write_config

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> DirectoryPayload:
    """Small files (gathered into larger sends), an empty one, and large ones
    (sent as regions, split into pieces)."""
    root = tmp_path_factory.mktemp("tree") / "S230518h_llo_1"
    (root / "plots").mkdir(parents=True)
    for index in range(40):
        (root / "plots" / f"p{index:02d}.png").write_bytes(os.urandom(5000 + index * 997))
    (root / "empty.txt").write_bytes(b"")
    (root / "big.h5").write_bytes(os.urandom(9 * MiB + 123))
    (root / "medium.json").write_bytes(os.urandom(MIN_SEND + 1))
    return DirectoryPayload.pack(root)


def content(pieces: Iterator[bytes | FileRegion]) -> bytes:
    out = bytearray()
    for piece in pieces:
        out += b"".join(piece) if isinstance(piece, FileRegion) else piece
    return bytes(out)


def test_region_bodies_give_the_bytes_block_bodies_give(tree: DirectoryPayload) -> None:
    ranges = [(0, tree.size), (1, tree.size - 1), (700_000, 3 * MiB), (tree.size - 10, tree.size)]
    for start, end in ranges:
        counted: list[int] = []
        regions = SliceBody(tree, start, end, counted.append, regions=True)
        pieces = list(regions)
        assert content(iter(pieces)) == b"".join(SliceBody(tree, start, end)), (start, end)
        assert sum(counted) == regions.sent == end - start
        assert all(len(piece) <= max(REGION_PIECE, MIN_SEND + 2 * MiB) for piece in pieces)
        # Re-iterable (an auth handler may send the body again after a 401).
        assert content(iter(regions)) == content(iter(pieces))
    big = list(SliceBody(tree, 0, tree.size, regions=True))
    assert sum(isinstance(piece, FileRegion) for piece in big) >= 3  # 9 MiB in 4 MiB pieces
    assert len(big) < 15  # the tar headers and 40 small files gathered into few sends


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes sent by each ``socket.sendfile`` call (the real one still runs)."""
    calls: list[int] = []
    real = socket.socket.sendfile

    def counting(self, file, offset=0, count=None):  # type: ignore[no-untyped-def]
        sent = real(self, file, offset, count)
        calls.append(sent)
        return sent

    monkeypatch.setattr(socket.socket, "sendfile", counting)
    return calls


def send_whole(
    session: requests.Session, base: str, tree: DirectoryPayload, force_regions: bool = False
) -> str:
    """Create an upload of the packed tree's bytes (as a plain file) and send
    them in one PATCH; returns the upload URL."""
    digest = hashlib.sha256(b"".join(SliceBody(tree, 0, tree.size))).hexdigest()
    metadata = {
        "project": "O4",
        "graceid": "S230518h",
        "uploader": "llo",
        "revision": "1",
        "filename": f"{'forced' if force_regions else 'tree'}.tar.bin",
        "kind": "file",
        "sha256": digest,
    }
    tus = TusClient(session, f"{base}/files/")
    created = tus.create(tree.size, metadata)
    body = SliceBody(tree, 0, tree.size)
    if force_regions:  # what any http.client connection makes of region pieces
        body.regions = True
        response = session.patch(
            created.url,
            data=body,
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            timeout=60,
        )
        assert response.status_code == 204, response.text
    else:
        tus.patch(created.url, 0, body)
    return created.url


def landed(server: LiveServer, name: str) -> bytes:
    return server.published(name).read_bytes()


def test_plain_http_sends_file_content_with_sendfile(
    live_server: LiveServer, tree: DirectoryPayload, sendfile_calls: list[int]
) -> None:
    session = make_session()
    send_whole(session, live_server.url, tree)
    expected = b"".join(SliceBody(tree, 0, tree.size))
    assert landed(live_server, "tree.tar.bin") == expected
    assert sum(sendfile_calls) >= 9 * MiB  # the big file's bytes, at least
    pool = session.get_adapter(live_server.url).poolmanager.connection_from_url(live_server.url)
    assert pool.ConnectionCls is SendfileHTTPConnection


def test_another_http_client_connection_sends_regions_as_blocks(
    live_server: LiveServer, tree: DirectoryPayload, sendfile_calls: list[int]
) -> None:
    session = requests.Session()  # requests' own adapter, connections that know no regions
    send_whole(session, live_server.url, tree, force_regions=True)
    assert landed(live_server, "forced.tar.bin") == b"".join(SliceBody(tree, 0, tree.size))
    assert sendfile_calls == []


@needs_nginx
def test_tls_sends_file_content_from_a_buffer(
    data_dir: Path,
    tmp_path: Path,
    tree: DirectoryPayload,
    sendfile_calls: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # nginx on this host is the proxy whose X-Forwarded-* the app believes.
    config = write_config(tmp_path / "server.toml", trusted_proxies=["127.0.0.1", "::1"])
    with behind_nginx(data_dir, tmp_path, config) as (server, nginx):
        # requests lets REQUESTS_CA_BUNDLE win over a session's own verify.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(nginx.cert))
        session = make_session(verify=str(nginx.cert))
        send_whole(session, nginx.url, tree)
        assert landed(server, "tree.tar.bin") == b"".join(SliceBody(tree, 0, tree.size))
        assert sendfile_calls == []  # sendfile cannot encrypt
        pool = session.get_adapter(nginx.url).poolmanager.connection_from_url(nginx.url)
        assert pool.ConnectionCls is SendfileHTTPSConnection
