"""A payload hashed first and sent as one upload.

The resume entry names the upload (and the payload's sha256, known before the
upload is made); a re-run asks the server's offset (HEAD) and goes on from
there.  An upload the server no longer has is made anew, once.
"""

from __future__ import annotations

import logging

from .errors import UploadGoneError
from .job import Job
from .payload import Scan
from .progress import human_bytes
from .resume import ResumeEntry
from .retry import start_over_once
from .sender import Tally

log = logging.getLogger("dqr-xfer")


def send_single(job: Job, hashed: Scan, metadata: dict[str, str]) -> tuple[str, int, Tally]:
    """Send the payload as one upload with ``metadata``: its URL, the offset
    this run started from and the tally of bytes sent."""
    payload = job.payload

    def attempt() -> tuple[str, int, Tally]:
        url, offset, carried = _open(job, hashed, metadata)
        job.proceed([url])
        task = job.progress.task(payload.filename, payload.size, offset)
        tally = Tally(task, [(url, payload.size)], [offset])
        tally.wire += carried
        try:
            job.sender(url, hashed, (0, payload.size), tally).send(offset)
            return url, offset - carried, tally
        finally:
            task.close()

    return start_over_once(payload.filename, attempt, job.resume.drop)


def _open(job: Job, hashed: Scan, metadata: dict[str, str]) -> tuple[str, int, int]:
    """The upload to send to, its offset and the bytes its creation carried:
    the unfinished one the resume entry names if the server still has it,
    else a new one (remembered; a small one with its bytes, see
    :meth:`Job.create <dqrxfer.job.Job.create>`)."""
    payload = job.payload
    entry = job.resume.get()
    if entry is not None and entry.url:
        try:
            offset = job.offset(entry.url)
        except UploadGoneError:
            log.warning(
                "%s: the server no longer has the unfinished upload %s; starting over",
                payload.filename,
                entry.url,
            )
            job.resume.drop()
        else:
            log.info(
                "Resuming %s at %s of %s (%s)",
                payload.filename,
                human_bytes(offset),
                human_bytes(payload.size),
                entry.url,
            )
            return entry.url, offset, 0
    created = job.create(payload.size, metadata, None, carry=hashed)
    job.resume.remember(ResumeEntry(job.server, payload.size, hashed.sha256, url=created.url))
    log.info(
        "Uploading %s (%s, kind=%s) to %s",
        payload.source,
        human_bytes(payload.size),
        payload.kind,
        created.url,
    )
    return created.url, created.offset, created.carried
