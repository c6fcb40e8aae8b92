"""A payload sent as partial uploads while it is hashed, then joined by a
final upload (the concatenation extension).

The partial uploads carry the report metadata but the sha256, so the server
checks and authorizes them before any byte is sent; a thread hashes the
payload meanwhile, and the final upload made of them carries the whole
metadata: hashing costs no time of its own.  With concatenation-unfinished the
final upload is asked for while the partial uploads travel, as soon as the
sha256 is known, and the last bytes of the payload wait for it (see
:mod:`~dqrxfer.final`), so creating it is quick and the publication happens
in the last PATCH, where a lost answer is harmless.  With several partial
uploads (``parallel``) they are sent at once, each on a thread and a session
of its own.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from .errors import UploadGoneError, worst_exit_code
from .final import FinalCreation
from .job import Job
from .payload import BackgroundScan, Payload, Scan
from .pieces import split_ranges
from .progress import human_bytes
from .resume import ResumeEntry
from .retry import Retrier, start_over_once
from .sender import Hold, Tally
from .transport import Capabilities, Created, TusClient

log = logging.getLogger("dqr-xfer")

#: Bytes of the payload's end held back until the final upload exists.
TAIL = 64 * 1024


def send_partials(
    job: Job, algorithm: str | None, streams: int, caps: Capabilities
) -> tuple[str, int, Tally, str]:
    """Send the payload as ``streams`` partial uploads while a thread
    hashes it, then create the final upload with the full metadata: the
    final upload's URL, the bytes the server had already, the tally of bytes
    sent and the payload's sha256.

    What the resume store holds, and when: the partial uploads' URLs as
    soon as each is created; the sha256 once it is known (before the
    final upload is asked for); the final upload's URL as soon as the
    server answers.  A re-run therefore continues the partial uploads,
    hashes only if no sha256 was kept, and never creates a second final
    upload once the first one's URL is kept.
    """
    payload = job.payload

    def attempt() -> tuple[str, int, Tally, str]:
        entry = _entry(job)
        background = None
        if entry.sha256:
            job.scans.drop(payload)  # known from the run that was interrupted
        else:
            background = job.scans.running(payload, algorithm)
        try:
            return _drive(job, algorithm, streams, caps, entry, background)
        finally:
            if background is not None:
                background.stop()

    return start_over_once(payload.filename, attempt, job.resume.drop)


def _entry(job: Job) -> ResumeEntry:
    """The resume entry to go on with (a new one if there is none, or if
    the final upload it names is gone)."""
    entry = job.resume.get()
    if entry is not None and entry.url:
        url = entry.url
        try:
            job.retrier.call(lambda: job.tus.status(url, final=True))
        except UploadGoneError:
            log.warning(
                "%s: the server no longer has the final upload %s; starting over",
                job.payload.filename,
                entry.url,
            )
            job.resume.drop()
            entry = None
    return entry or ResumeEntry(job.server, job.payload.size, "")


def _drive(
    job: Job,
    algorithm: str | None,
    streams: int,
    caps: Capabilities,
    entry: ResumeEntry,
    background: BackgroundScan | None,
) -> tuple[str, int, Tally, str]:
    payload = job.payload
    parts = split_ranges(payload.size, streams)
    urls, offsets = _open(job, parts, entry)
    job.proceed([*urls, *([entry.url] if entry.url else [])])
    resumed = sum(offsets)
    _log_start(payload, urls, resumed)
    hashed = (
        background.scan
        if background is not None
        else Scan(entry.sha256, payload.size, job.options.chunk_size, algorithm)
    )
    lengths = [end - start for start, end in parts]
    task = job.progress.task(payload.filename, payload.size, resumed)
    tally = Tally(task, list(zip(urls, lengths, strict=True)), offsets)
    sending = Streams(job, hashed, parts, urls, tally)
    try:
        if entry.url:
            sending.send(offsets, lengths)
        elif caps.has("concatenation-unfinished"):
            # The final upload is asked for while the partial uploads travel;
            # the payload's last bytes wait for it (see dqrxfer.final).
            final = FinalCreation(job, entry, urls, background).start()
            try:
                hold = Hold(max(offsets[-1], lengths[-1] - TAIL), final.wait)
                sending.send(offsets, lengths, hold)
            finally:
                final.stop()
            final.wait()
        else:
            sending.send(offsets, lengths)
            # The final upload joins and publishes the finished partial uploads.
            FinalCreation(job, entry, urls, background).start().wait()
    finally:
        task.close()
    assert entry.url is not None  # the final upload exists once its parts are sent
    return entry.url, resumed, tally, entry.sha256


def _open(
    job: Job, parts: list[tuple[int, int]], entry: ResumeEntry
) -> tuple[list[str], list[int]]:
    """The partial uploads' URLs and offsets: those the entry names and the
    server still has, and new ones (remembered as they are created)."""
    payload = job.payload
    # The report metadata (no sha256 yet) lets the server refuse the
    # upload (authorization, project, size) before any byte is sent.
    metadata = job.planned.report.to_metadata()
    if len(entry.partials) > len(parts):
        entry.partials = []
    urls: list[str] = []
    offsets: list[int] = []
    missing: list[int] = []
    for index in range(len(parts)):
        url = entry.partials[index] if index < len(entry.partials) else None
        if url is not None:
            try:
                offsets.append(job.offset(url))
                urls.append(url)
                continue
            except UploadGoneError:
                if entry.url:  # the final upload can never be completed now
                    raise UploadGoneError(
                        f"{payload.filename}: the server no longer has the partial "
                        f"upload {url} of the final upload {entry.url}"
                    ) from None
                log.warning(
                    "%s: the server no longer has the unfinished upload %s; starting over",
                    payload.filename,
                    url,
                )
        urls.append("")
        offsets.append(0)
        missing.append(index)
    for index, created in zip(missing, _create(job, parts, missing, metadata), strict=True):
        urls[index] = created.url
        offsets[index] = created.offset
    if missing:
        entry.partials = urls
        job.resume.remember(entry)
    return urls, offsets


def _create(
    job: Job, parts: list[tuple[int, int]], indices: list[int], metadata: dict[str, str]
) -> list[Created]:
    """New partial uploads for ``parts[index]`` of each of ``indices``, all
    asked at once (one round trip, not one per stream): the first on the
    job's session, the others on sessions of their own."""
    if len(indices) <= 1:
        return [job.create(parts[i][1] - parts[i][0], metadata, "partial") for i in indices]

    def create(index: int) -> Created:
        start, end = parts[index]
        if index == indices[0]:
            return job.create(end - start, metadata, "partial")
        with job.session_factory() as session:
            own = replace(
                job,
                tus=job.tus.on_same_link(session),
                retrier=Retrier(job.options.retry, job.payload.filename),
            )
            return own.create(end - start, metadata, "partial")

    with ThreadPoolExecutor(len(indices), thread_name_prefix="dqr-create") as pool:
        return list(pool.map(create, indices))


def _log_start(payload: Payload, urls: list[str], resumed: int) -> None:
    several = f" in {len(urls)} partial uploads" if len(urls) > 1 else f" ({urls[0]})"
    if resumed:
        log.info(
            "Resuming %s at %s of %s%s",
            payload.filename,
            human_bytes(resumed),
            human_bytes(payload.size),
            several,
        )
    elif len(urls) > 1:
        log.info(
            "Uploading %s (%s, kind=%s) as %d partial uploads",
            payload.source,
            human_bytes(payload.size),
            payload.kind,
            len(urls),
        )
    else:
        log.info(
            "Uploading %s (%s, kind=%s) to %s, hashing it meanwhile",
            payload.source,
            human_bytes(payload.size),
            payload.kind,
            urls[0],
        )


@dataclass
class Streams:
    """The partial uploads of one payload (``parts[index]`` of the payload
    goes to ``urls[index]``), sent at once."""

    job: Job
    hashed: Scan
    parts: list[tuple[int, int]]
    urls: list[str]
    tally: Tally
    hold: Hold | None = None

    def send(self, offsets: list[int], stops: list[int], hold: Hold | None = None) -> None:
        """Send each partial upload ``index`` from ``offsets[index]`` to
        ``stops[index]``: one in this thread (on the job's session, with the
        job's retrier), several at once on threads of their own (each with
        its own session and retrier).  ``hold`` holds bytes of the last
        partial upload back (see :meth:`RangeSender.send`)."""
        todo = [index for index in range(len(self.parts)) if offsets[index] < stops[index]]
        self.hold = hold
        if len(todo) == 1:
            self._send(todo[0], offsets, stops, self.job.tus, self.job.retrier)
            return
        if not todo:
            return
        cancel = threading.Event()

        def on_thread(index: int) -> None:
            own = self.job.session_factory()
            try:
                retrier = Retrier(self.job.options.retry, self._label(index), cancel)
                tus = self.job.tus.on_same_link(own)
                self._send(index, offsets, stops, tus, retrier)
            except BaseException:
                cancel.set()
                raise
            finally:
                own.close()

        with ThreadPoolExecutor(len(todo), thread_name_prefix="dqr-part") as pool:
            futures = [pool.submit(on_thread, index) for index in todo]
            errors = [f.exception() for f in futures]
        failures = [e for e in errors if e is not None]
        if failures:
            gone = [e for e in failures if isinstance(e, UploadGoneError)]
            raise gone[0] if gone else _most_telling(failures)

    def _send(
        self, index: int, offsets: list[int], stops: list[int], tus: TusClient, retrier: Retrier
    ) -> None:
        sender = self.job.sender(
            self.urls[index], self.hashed, self.parts[index], self.tally, index, tus, retrier
        )
        last = index == len(self.parts) - 1
        sender.send(offsets[index], until=stops[index], hold=self.hold if last else None)

    def _label(self, index: int) -> str:
        filename = self.job.payload.filename
        return filename if len(self.parts) == 1 else f"{filename} part {index + 1}"


def _most_telling(errors: list[BaseException]) -> BaseException:
    """The error whose exit code :func:`worst_exit_code` would pick."""
    codes = [getattr(error, "exit_code", 1) for error in errors]
    return errors[codes.index(worst_exit_code(codes))]
