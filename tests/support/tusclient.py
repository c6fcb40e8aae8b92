"""Minimal tus requests for tests that look at single protocol steps
(who may create, HEAD or PATCH an upload), sent through any requests session."""

from __future__ import annotations

import requests

from .tus import TUS, encode_metadata, report_metadata, upload_id

__all__ = ["TUS", "create", "head", "patch", "upload_id"]


def create(
    session: requests.Session, server: str, length: int, **metadata: str
) -> requests.Response:
    fields = report_metadata(metadata.pop("filename", "data.json"), **metadata)
    headers = {**TUS, "Upload-Length": str(length), "Upload-Metadata": encode_metadata(fields)}
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
