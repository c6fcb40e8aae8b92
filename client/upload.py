"""The upload API: send one payload to the server with tus and check the result.

``upload_file`` is what ``dqr-upload`` calls for each path; other tools can
call it too::

    from dqrxfer.upload import ReportTarget, upload_file
    result = upload_file("https://dqr.example.org", "report.html",
                         ReportTarget("O4", "S230518h", "llo", 1))
    print(result.report_url)
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import requests
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError

from . import contract
from .errors import GaveUpError, RefusedError, UsageError

log = logging.getLogger("dqr-xfer")

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
TIMEOUT = (10, 120)


@dataclass(frozen=True)
class ReportTarget:
    """Which report a payload belongs to (the user's options)."""

    project: str
    graceid: str
    uploader: str
    revision: int
    subdir: str = ""


@dataclass(frozen=True)
class UploadResult:
    path: Path
    upload_url: str
    size: int
    sha256: str
    report_url: str | None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(4 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def describe(path: Path, target: ReportTarget) -> contract.ReportUpload:
    """Validate the target and the file name locally, before any network traffic."""
    try:
        return contract.ReportUpload(
            project=target.project,
            graceid=contract.validate_graceid(target.graceid),
            site=contract.validate_site(target.uploader),
            revision=contract.validate_revision(target.revision),
            subdir=contract.validate_subdir(target.subdir),
            filename=contract.validate_filename(path.name),
            kind=contract.KIND_FILE,
            sha256=sha256_file(path),
        )
    except contract.ContractError as error:
        raise UsageError(str(error)) from None


def _server_message(error: TusCommunicationError) -> str:
    content = error.response_content
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    return (content or str(error)).strip()


def upload_file(
    server: str,
    path: str | Path,
    target: ReportTarget,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    session: requests.Session | None = None,
) -> UploadResult:
    """Upload one file as ``kind=file`` and return where it landed."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: not a readable file")
    report = describe(path, target)
    endpoint = f"{server}/files/"
    client = TusClient(endpoint)
    try:
        uploader = client.uploader(
            file_path=str(path), chunk_size=chunk_size, metadata=report.to_metadata()
        )
        uploader.upload()
    except TusCommunicationError as error:
        status = error.status_code
        if status is not None and 400 <= status < 500:
            raise RefusedError(status, _server_message(error)) from None
        raise GaveUpError(f"upload of {path} failed: {_server_message(error)}") from None
    except requests.RequestException as error:
        raise GaveUpError(f"upload of {path} failed: {error}") from None
    upload_url = uploader.url
    size = path.stat().st_size
    record = _fetch_record(server, upload_url, session)
    if record.get("state") != "published":
        raise RefusedError(
            409, f"upload {upload_url} is {record.get('state')}: {record.get('error')}"
        )
    if record.get("sha256") != report.sha256 or record.get("length") != size:
        raise RefusedError(
            409,
            f"server record of {upload_url} does not match: size {record.get('length')}, "
            f"sha256 {record.get('sha256')}",
        )
    return UploadResult(path, upload_url, size, report.sha256 or "", record.get("report_url"))


def _fetch_record(server: str, upload_url: str, session: requests.Session | None) -> dict:
    upload_id = upload_url.rstrip("/").rsplit("/", 1)[-1]
    http = session or requests.Session()
    try:
        response = http.get(f"{server}/api/v1/uploads/{upload_id}", timeout=TIMEOUT)
    except requests.RequestException as error:
        raise GaveUpError(f"cannot read the server's record of {upload_url}: {error}") from None
    if response.status_code != 200:
        raise GaveUpError(
            f"cannot read the server's record of {upload_url}: HTTP {response.status_code}"
        )
    return response.json()
