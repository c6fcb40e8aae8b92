"""Minimal tus requests for tests that look at single protocol steps
(who may create, HEAD or PATCH an upload), sent through any requests session."""

from __future__ import annotations

import base64
from pathlib import Path

import requests

TUS = {"Tus-Resumable": "1.0.0"}


def report_metadata(**overrides: str) -> dict[str, str]:
    metadata = {
        "project": "O4",
        "graceid": "S230518h",
        "uploader": "llo",
        "revision": "1",
        "filename": "data.json",
        "kind": "file",
    }
    metadata.update(overrides)
    return metadata


def encode(metadata: dict[str, str]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items()
    )


def create(
    session: requests.Session, server: str, length: int, **metadata: str
) -> requests.Response:
    headers = {
        **TUS,
        "Upload-Length": str(length),
        "Upload-Metadata": encode(report_metadata(**metadata)),
    }
    return session.post(f"{server}/files/", headers=headers, timeout=30)


def head(session: requests.Session, url: str) -> requests.Response:
    return session.head(url, headers=TUS, timeout=30)


def patch(
    session: requests.Session, url: str, offset: int, body: bytes | object
) -> requests.Response:
    headers = {
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }
    return session.patch(url, headers=headers, data=body, timeout=60)


def upload_id(url: str) -> str:
    return Path(url.rstrip("/")).name
