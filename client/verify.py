"""The last step of an upload: the server's record must say it is published,
with the size and sha256 that were sent."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import requests

from .errors import RefusedError, TransientError
from .job import Job
from .transport import check_response, describe_error

#: States of the server's upload record that are final.
PUBLISHED, FAILED = "published", "failed"


def upload_id(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def verify(job: Job, session: requests.Session, url: str, sha256: str) -> dict[str, Any]:
    """The server's record of the upload at ``url`` (read on ``session``),
    once it says published with the payload's size and ``sha256``.

    While it does not yet, the upload is asked about (HEAD) before each
    retry: a server finishes there what an interrupted request left
    undone (such as joining a final upload).
    """
    payload = job.payload
    record_url = f"{job.server}/api/v1/uploads/{upload_id(url)}"
    first = True

    def attempt() -> dict[str, Any]:
        nonlocal first
        if not first:
            job.tus.status(url, final=True)  # the server finishes what is pending
        first = False
        began = time.monotonic()
        try:
            response = session.get(record_url)
        except requests.RequestException as error:
            raise TransientError(describe_error(error, record_url)) from error
        # A request without a body over the upload's link: its answer took a
        # round trip and then some (LinkEstimate keeps the quickest).
        job.tus.link.saw_answer(time.monotonic() - began)
        check_response(response, "upload record")
        record: dict[str, Any] = response.json()
        state = record.get("state")
        if state == FAILED:
            raise RefusedError(422, str(record.get("error") or "the server failed it"))
        if state != PUBLISHED:
            raise TransientError(f"the server is still finishing the upload ({state})")
        return record

    record = job.retrier.call(attempt)
    if record.get("length") != payload.size or record.get("sha256") != sha256:
        raise RefusedError(
            409,
            f"the server's record of {url} does not match what was sent: size "
            f"{record.get('length')} (sent {payload.size}), sha256 {record.get('sha256')} "
            f"(sent {sha256})",
        )
    return record
