"""Raw tus uploads with ``requests``: create, then PATCH the payload in chunks.

Used where a test needs the server's exact answer to the final PATCH (the
CLIs turn it into an exit code).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import threading
from dataclasses import dataclass
from pathlib import Path

import requests

TUS = {"Tus-Resumable": "1.0.0"}
TIMEOUT = 600


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items()
    )


def report_metadata(
    filename: str = "report.tar",
    kind: str = "tar",
    graceid: str = "S230518h",
    uploader: str = "llo",
    revision: int = 1,
    project: str = "O4",
    subdir: str = "",
    sha256: str | None = None,
) -> dict[str, str]:
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
) -> list[str]:
    """``dqr-upload`` sending to ``server_url`` for one report; ``extra``
    (options, then the paths) follows the report's options."""
    return [
        "dqr-upload",
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
