"""Helpers for driving the tus endpoint of a server: plain requests, raw
sockets (for bodies that stop midway), configs, and waiting; whole uploads
(create, then PATCH the payload in chunks) where a test needs the server's
exact answer to the final PATCH (the CLIs turn it into an exit code)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import itertools
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import pytest
import requests

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"
#: Timeout of each request of a whole upload (``send``).
TIMEOUT = 600
_names = itertools.count()

T = TypeVar("T")


class Served(Protocol):
    """A server the helpers drive: a live one (support.live) or the app in
    process (support.inprocess)."""

    @property
    def url(self) -> str: ...

    data_dir: Path


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items()
    )


def report_metadata(filename: str | None = None, **changes: str) -> dict[str, str]:
    """Valid report metadata; each call names a different file unless told."""
    metadata = {
        "project": "O4",
        "graceid": "S230518h",
        "uploader": "llo",
        "revision": "1",
        "filename": filename or f"file{next(_names)}.bin",
        "kind": "file",
    }
    metadata.update(changes)
    return metadata


def write_config(path: Path, **keys: object) -> Path:
    """A TOML config that upgrades its own schema and serves reports, plus ``keys``."""
    lines = ["auto_upgrade = true", "serve_reports = true"]
    for key, value in keys.items():
        lines.append(f"{key} = {_toml(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def module_config(request: pytest.FixtureRequest, root: Path, **keys: object) -> Path:
    """:func:`write_config` for a module's servers, whose fixture is
    parametrized ``sqlite`` or ``postgresql`` (then the module's database)."""
    if request.param == "postgresql":
        keys["database_url"] = request.getfixturevalue("module_postgres_url")
    return write_config(root / "config.toml", **keys)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return str(value)


def create(
    server: Served,
    length: int | None,
    metadata: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    session: requests.Session | None = None,
) -> requests.Response:
    """POST a new upload (``length`` None: deferred), through ``session`` if given."""
    sent = dict(TUS)
    if length is None:
        sent["Upload-Defer-Length"] = "1"
    else:
        sent["Upload-Length"] = str(length)
    if metadata is None:
        metadata = report_metadata()
    if metadata:
        sent["Upload-Metadata"] = encode_metadata(metadata)
    if body is not None:
        sent["Content-Type"] = OCTETS
    sent.update(headers or {})
    return (session or requests).post(f"{server.url}/files/", headers=sent, data=body, timeout=30)


def create_final(
    server: Served,
    urls: list[str],
    metadata: dict[str, str] | None = None,
    session: requests.Session | None = None,
) -> requests.Response:
    """POST the final upload of the concatenation extension made of ``urls``."""
    headers = {
        **TUS,
        "Upload-Concat": "final;" + " ".join(urls),
        "Upload-Metadata": encode_metadata(metadata or report_metadata()),
    }
    return (session or requests).post(f"{server.url}/files/", headers=headers, timeout=30)


def new_upload(server: Served, length: int | None, **kwargs: object) -> str:
    response = create(server, length, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 201, response.text
    return response.headers["Location"]


def head(
    url: str, headers: dict[str, str] | None = None, session: requests.Session | None = None
) -> requests.Response:
    return (session or requests).head(url, headers={**TUS, **(headers or {})}, timeout=30)


def offset_of(url: str) -> int:
    response = head(url)
    assert response.status_code == 200, response.status_code
    return int(response.headers["Upload-Offset"])


def patch(
    url: str,
    offset: int,
    body: bytes | Iterator[bytes],
    headers: dict[str, str] | None = None,
    session: requests.Session | None = None,
) -> requests.Response:
    """PATCH ``body`` (an iterator of bytes: sent chunked, without Content-Length)."""
    sent = {**TUS, "Content-Type": OCTETS, "Upload-Offset": str(offset)}
    sent.update(headers or {})
    return (session or requests).patch(url, headers=sent, data=body, timeout=60)


def data_file(server: Served, url: str) -> Path:
    return server.data_dir / "uploads" / url.rstrip("/").rsplit("/", 1)[-1]


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def wait_for(
    condition: Callable[[], T], timeout: float = 60.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def patch_until_unlocked(
    url: str, offset: int, body: bytes, headers: dict[str, str] | None = None
) -> requests.Response:
    """PATCH, retrying while the upload is busy (423), as tus clients do."""
    deadline = time.monotonic() + 60
    while True:
        response = patch(url, offset, body, headers)
        if response.status_code != 423 or time.monotonic() > deadline:
            return response


class RawPatch:
    """A PATCH sent by hand over a socket, so that a test controls exactly how
    much of the body is sent and when the connection drops."""

    def __init__(
        self,
        url: str,
        offset: int,
        length: int,
        headers: dict[str, str] | None = None,
        source: tuple[str, int] | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 80), timeout=60, source_address=source
        )
        lines = [
            f"PATCH {parts.path} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Tus-Resumable: 1.0.0",
            f"Content-Type: {OCTETS}",
            f"Upload-Offset: {offset}",
            f"Content-Length: {length}",
        ]
        lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str]]:
        """Read the status line and headers of the response."""
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
        head_text = buffer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        status_line, *header_lines = head_text.split("\r\n")
        headers = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    def drop(self) -> None:
        """Vanish: reset the connection (RST), as a crashed client or a broken
        link looks to the server."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def patch_partly(
    server: Served,
    url: str,
    offset: int,
    body: bytes,
    until: int,
    headers: dict[str, str] | None = None,
) -> RawPatch:
    """A PATCH of ``body`` at ``offset`` sent by hand up to offset ``until``,
    those bytes on the server's disk (its data file that long); the rest of
    the body not sent, the connection open for the test to go on, drop or
    close."""
    raw = RawPatch(url, offset, len(body), headers=headers)
    raw.send(body[: until - offset])
    wait_for(lambda: data_file(server, url).stat().st_size == until, what="bytes on disk")
    return raw


def sha1_header(data: bytes) -> str:
    """The ``Upload-Checksum`` of ``data`` with SHA-1."""
    return "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()


def upload_files(server: Served) -> set[str]:
    return {path.name for path in (server.data_dir / "uploads").iterdir() if path.is_file()}


def record(server: Served, url: str) -> dict:
    response = requests.get(f"{server.url}/api/v1/uploads/{upload_id(url)}", timeout=10)
    return response.json() if response.status_code == 200 else {}


def published(server: Served, metadata: dict[str, str]) -> Path:
    return (
        server.data_dir
        / "reports"
        / metadata["project"]
        / f"{metadata['graceid']}_dir"
        / f"{metadata['graceid']}_{metadata['uploader']}_{metadata['revision']}"
        / metadata["filename"]
    )


def tar_metadata(
    filename: str = "report.tar",
    kind: str = "tar",
    graceid: str = "S230518h",
    uploader: str = "llo",
    revision: int = 1,
    project: str = "O4",
    subdir: str = "",
    sha256: str | None = None,
) -> dict[str, str]:
    """Valid metadata of a tar archive (``kind`` tar) of one report."""
    metadata = {
        "project": project,
        "graceid": graceid,
        "uploader": uploader,
        "revision": str(revision),
        "filename": filename,
        "kind": kind,
    }
    if subdir:
        metadata["subdir"] = subdir
    if sha256:
        metadata["sha256"] = sha256
    return metadata


@dataclass
class Sent:
    url: str
    final: requests.Response

    @property
    def upload_id(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def dqr_upload_command(
    server_url: str,
    *extra: str,
    project: str = "O4",
    graceid: str = "S230518h",
    site: str = "llo",
    revision: int = 1,
    program: str = "dqr-upload",
) -> list[str]:
    """``dqr-upload`` sending to ``server_url`` for one report; ``extra``
    (options, then the paths) follows the report's options.  ``program`` is
    the script to run: a name for ``run_cli``, or a path (another install's)."""
    return [
        program,
        "-s",
        server_url,
        "-p",
        project,
        "-g",
        graceid,
        "-u",
        site,
        "--revision",
        str(revision),
        *extra,
    ]


def _length_and_stream(payload: bytes | Path) -> tuple[int, io.BufferedIOBase]:
    if isinstance(payload, Path):
        return payload.stat().st_size, open(payload, "rb")
    return len(payload), io.BytesIO(payload)


def random_file(path: Path, mib: int) -> str:
    """Write ``mib`` MiB of random bytes to ``path``, a MiB at a time; their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        for _ in range(mib):
            block = os.urandom(1 << 20)
            digest.update(block)
            handle.write(block)
    return digest.hexdigest()


def sha256_hex(payload: bytes | Path) -> str:
    if isinstance(payload, bytes):
        return hashlib.sha256(payload).hexdigest()
    digest = hashlib.sha256()
    with open(payload, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def send(
    server_url: str,
    payload: bytes | Path,
    metadata: dict[str, str],
    chunk_size: int = 8 * 1024 * 1024,
    session: requests.Session | None = None,
) -> Sent:
    """Create an upload and PATCH ``payload``; return the final PATCH's response.

    Raises ``AssertionError`` if creation or an intermediate PATCH fails.
    """
    http = session or requests.Session()
    length, stream = _length_and_stream(payload)
    with stream:
        created = http.post(
            f"{server_url}/files/",
            headers={
                **TUS,
                "Upload-Length": str(length),
                "Upload-Metadata": encode_metadata(metadata),
            },
            timeout=TIMEOUT,
        )
        assert created.status_code == 201, (created.status_code, created.text)
        url = created.headers["Location"]
        offset = 0
        final = created
        while offset < length:
            block = stream.read(chunk_size)
            final = http.patch(
                url,
                data=block,
                headers={
                    **TUS,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                },
                timeout=TIMEOUT,
            )
            offset += len(block)
            if offset < length:
                assert final.status_code == 204, (final.status_code, final.text)
    return Sent(url, final)


def resend_last_patch(server_url: str, sent: Sent, length: int) -> requests.Response:
    """An empty PATCH at the final offset: what a client does when it lost the last answer."""
    return requests.patch(
        sent.url,
        data=b"",
        headers={
            **TUS,
            "Upload-Offset": str(length),
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=TIMEOUT,
    )


def create_upload(server_url: str, length: int, metadata: dict[str, str]) -> str:
    """Create an upload of ``length`` bytes; return its URL."""
    created = requests.post(
        f"{server_url}/files/",
        headers={
            **TUS,
            "Upload-Length": str(length),
            "Upload-Metadata": encode_metadata(metadata),
        },
        timeout=30,
    )
    assert created.status_code == 201, created.text
    return created.headers["Location"]


def patch_in_background(url: str, payload: bytes) -> threading.Thread:
    """PATCH the whole payload from a thread, for a final PATCH that never gets
    an answer (the server dies while finalizing); join the thread afterwards."""

    def run() -> None:
        with contextlib.suppress(requests.RequestException):
            requests.patch(
                url,
                data=payload,
                headers={
                    **TUS,
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                },
                timeout=120,
            )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
