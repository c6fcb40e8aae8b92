"""The upload API: send report payloads with tus, resumably, and check the result.

``dqr-upload`` and ``dqr-batch-upload`` are thin layers over this module, and
other tools can call it too::

    from dqrxfer.upload import ReportTarget, upload

    results = upload("https://dqr.example.org", ["index.html", "plots/"],
                     ReportTarget("O4", "S230518h", "llo", 1))
    print(results[0].report_url)

or, to keep a session, options and progress across calls, use
:class:`ReportUploader` directly.

One payload travels like this:

1. plan: the path becomes a payload (file, tarball or packed directory) and
   the metadata is checked against the report contract, before any traffic;
2. open: the resume store is asked for an unfinished upload of the same
   payload to the same place; if the server still has it, the upload goes on
   from the server's offset, otherwise a new upload is created and remembered;
3. send: PATCH requests of ``chunk_size`` bytes, streamed from disk (with
   ``sendfile`` where the connection allows).  After a failure the server's
   offset is asked again (HEAD) and sending continues from there, so only
   bytes that never arrived are sent again;
4. verify: the server's record of the upload must say ``published`` with our
   size and sha256; then the resume entry is dropped and the report URL is
   returned.

The report contract puts the payload's sha256 in the metadata of the upload
that is published.  With a server that has the concatenation extension, a
large payload (at least ``overlap_min_size``) is therefore sent as a *partial*
upload (with the report metadata but the sha256: the server checks and
authorizes it before any byte is sent) while a thread computes its sha256, and
a *final* upload made of it carries the whole metadata: hashing costs no time
of its own.  The last
bytes of the payload are held back until the final upload exists (with
concatenation-unfinished), so creating it is quick and the publication
happens in the last PATCH, where a lost answer is harmless.  The server
joins a single partial upload by a hard link, without copying.  Smaller
payloads, and servers without concatenation, are hashed first and sent as one
upload.  With ``parallel=N`` the payload is sent as N partial uploads at once,
hashed the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from . import contract, faults
from .errors import (
    DqrxferError,
    GaveUpError,
    RefusedError,
    TransientError,
    UploadGoneError,
    UsageError,
    worst_exit_code,
)
from .payload import (
    DEFAULT_CHUNK_SIZE,
    BackgroundScan,
    MiB,
    Payload,
    Scan,
    checksum_range,
    choose_checksum,
    payload_for,
    scan,
    tus_checksum,
)
from .progress import NullProgress, Progress, human_bytes
from .resume import ResumeEntry, ResumeStore, resume_key
from .retry import Retrier, RetryPolicy
from .session import SessionFactory, make_session
from .transport import (
    Capabilities,
    OffsetConflict,
    SliceBody,
    TusClient,
    check_response,
    new_offset,
)

log = logging.getLogger("dqr-xfer")

#: Consecutive checksum mismatches (460) on one chunk before the server's
#: refusal is taken as final.
MAX_CHECKSUM_FAILURES = 3
#: The smallest PATCH body the client sends (but for a payload's last bytes).
MIN_PIECE = 256 * 1024
#: Before the link has failed once, a checksummed piece may be as large as
#: this share of the upload (as well as 1/8 of what got through): a first cut
#: then costs at most 1/64 of the payload, and a large payload on a clean link
#: starts with whole chunks instead of 256 KiB pieces (1 GiB: 32 PATCHes, not 72).
FIRST_CUT_SHARE = 64
#: Payloads at least this large are sent while they are hashed (partial and
#: final upload) when the server can concatenate: one request more, hashing
#: for free.  Below it the hash takes less time than a round trip.
OVERLAP_MIN_SIZE = 64 * MiB
#: Bytes of the payload's end held back until the final upload exists.
TAIL = 64 * 1024


class PieceSizer:
    """How many bytes the next PATCH may carry, learnt from the failures seen.

    * After a failure the next PATCH carries at most :data:`MIN_PIECE` and each
      success doubles that (a ramp): if the server was still writing the cut
      request when it answered HEAD, the stale offset costs a small 409, not a
      whole chunk.
    * With per-chunk checksums the server must discard a chunk cut in the
      middle (it cannot verify it), so a cut costs everything sent of that
      chunk.  Pieces are then kept small relative to the bytes that get
      through between failures: before the first failure at most 1/8 of what
      got through so far or 1/:data:`FIRST_CUT_SHARE` of the upload, after
      failures about 1/16 of the typical stretch between them (never less
      than :data:`MIN_PIECE`).  A cut then costs a
      few per cent of the data, and on a link that stops failing pieces grow
      back to the chunk size.  Without checksums the server keeps partial
      chunks and pieces are the chunk size.
    * With ``max_piece`` above the chunk size, each PATCH that went through
      whole doubles the limit, up to ``max_piece`` (fewer requests on a good
      link); a failure brings it back to the chunk size.
    """

    FIRST_FRACTION = 8
    FRACTION = 16

    def __init__(
        self,
        chunk_size: int,
        adaptive: bool,
        resuming: bool,
        max_piece: int | None = None,
        length: int = 0,
    ) -> None:
        self.chunk_size = chunk_size
        self.first_cut = max(MIN_PIECE, length // FIRST_CUT_SHARE)
        self.max_piece = max(chunk_size, max_piece or chunk_size)
        self.limit = chunk_size
        self.adaptive = adaptive
        self.ramp: int | None = MIN_PIECE if resuming else None
        self.distance: float | None = None  # bytes between failures, smoothed
        self.run = 0  # bytes acknowledged since the last failure

    def next(self) -> int:
        sizes = [self.limit]
        if self.ramp is not None:
            sizes.append(self.ramp)
        if self.adaptive:
            if self.distance is None:
                sizes.append(max(self.first_cut, self.run // self.FIRST_FRACTION))
            else:
                stretch = max(self.distance, self.run / 2)
                sizes.append(max(MIN_PIECE, int(stretch) // self.FRACTION))
        return min(sizes)

    def succeeded(self, count: int) -> None:
        self.run += count
        if self.ramp is not None:
            self.ramp = None if self.ramp * 2 >= self.chunk_size else self.ramp * 2
        elif count >= self.limit:
            self.limit = min(self.max_piece, self.limit * 2)

    def failed(self) -> None:
        self.ramp = MIN_PIECE
        self.limit = self.chunk_size
        run = float(self.run)
        self.distance = run if self.distance is None else (self.distance + run) / 2
        self.run = 0


#: States of the server's upload record that are final.
PUBLISHED, FAILED = "published", "failed"


@dataclass(frozen=True)
class ReportTarget:
    """Which report a payload belongs to (the user's options)."""

    project: str
    graceid: str
    uploader: str
    revision: int | str
    subdir: str = ""


@dataclass(frozen=True)
class UploadOptions:
    """How to send.  ``chunk_size`` is the size of one PATCH request;
    ``parallel`` the number of partial uploads for one payload (needs the
    server's concatenation extension); ``checksums`` sends Upload-Checksum
    when the server offers it; ``resume`` uses the resume store;
    ``overlap_min_size``: payloads at least this large are hashed while
    they are sent (needs concatenation too).  ``max_piece``: a PATCH may
    grow to this many bytes (whole chunks) while the link holds, when the
    server takes no chunk checksums or CRC-32 ones; None: ``chunk_size``
    bytes at most (``dqr-upload`` sets it unless ``--chunk-size`` is given).
    ``follow_external_links``: send what symbolic links leading out of their
    directory point to, instead of refusing or skipping them."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    parallel: int = 1
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    checksums: bool = True
    resume: bool = True
    as_file: bool = False
    follow_external_links: bool = False
    overlap_min_size: int = OVERLAP_MIN_SIZE
    max_piece: int | None = None

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise UsageError("chunk size: must be at least 1 byte")
        if self.parallel < 1:
            raise UsageError("parallel: must be at least 1")


@dataclass(frozen=True)
class PlannedUpload:
    """A payload and where it goes, checked locally."""

    payload: Payload
    report: contract.ReportUpload

    @property
    def label(self) -> str:
        return self.payload.filename


@dataclass(frozen=True)
class UploadResult:
    source: Path
    kind: str
    filename: str
    upload_url: str
    size: int
    sha256: str
    report_url: str | None
    #: Bytes put on the wire by this run (request bodies), and where the
    #: upload stood when this run started (non-zero when it resumed).
    sent_bytes: int = 0
    resumed_from: int = 0
    seconds: float = 0.0


@dataclass
class Outcome:
    """What happened to one path of a batch: a result or an error."""

    path: Path
    result: UploadResult | None = None
    error: DqrxferError | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code


def describe(payload: Payload, target: ReportTarget) -> contract.ReportUpload:
    """Validate the target and the payload's name locally, before any traffic."""
    try:
        return contract.ReportUpload(
            project=target.project.strip(),
            graceid=contract.validate_graceid(target.graceid),
            site=contract.validate_site(target.uploader),
            revision=contract.validate_revision(target.revision),
            subdir=contract.validate_subdir(target.subdir),
            filename=contract.validate_filename(payload.filename),
            kind=contract.validate_kind(payload.kind),
            sha256=None,
        )
    except contract.ContractError as error:
        raise UsageError(str(error)) from None


def upload_id(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


class _Tally:
    """Bytes of one payload: acknowledged per stream, plus those in flight;
    feeds the progress bar and counts the bytes put on the wire."""

    def __init__(self, task, streams: int, start: Sequence[int]) -> None:  # type: ignore[no-untyped-def]
        self.task = task
        self.lock = threading.Lock()
        self.acked = list(start) + [0] * (streams - len(start))
        self.flight = [0] * streams
        self.wire = 0

    def sending(self, stream: int):  # type: ignore[no-untyped-def]
        def on_send(count: int) -> None:
            with self.lock:
                self.flight[stream] += count
                self.wire += count
                done = sum(self.acked) + sum(self.flight)
            self.task.moveto(done)

        return on_send

    def acknowledge(self, stream: int, offset: int) -> None:
        with self.lock:
            self.acked[stream] = offset
            self.flight[stream] = 0
            done = sum(self.acked) + sum(self.flight)
        self.task.moveto(done)


class ReportUploader:
    """Uploads payloads into one report (``target``) on ``server``.

    ``session_factory`` makes the HTTP session each thread of work uses (this
    is where authentication plugs in); ``store`` is the resume store (None
    for the default location); ``progress`` shows transfers.
    """

    def __init__(
        self,
        server: str,
        target: ReportTarget,
        options: UploadOptions | None = None,
        session_factory: SessionFactory | None = None,
        store: ResumeStore | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.endpoint = f"{self.server}/files/"
        self.target = target
        self.options = options or UploadOptions()
        self.session_factory = session_factory or make_session
        self.store = store or ResumeStore()
        self.progress = progress or NullProgress()
        self._capabilities: Capabilities | None = None
        self._capabilities_lock = threading.Lock()
        self._early: dict[int, BackgroundScan] = {}

    # -- planning ------------------------------------------------------------

    def plan(self, path: str | Path, payload: Payload | None = None) -> PlannedUpload:
        """``path`` as a payload checked against the contract (``payload``:
        the one already made of ``path``, such as :meth:`adopt_scan`'s)."""
        if payload is None:
            payload = payload_for(
                Path(path),
                as_file=self.options.as_file,
                follow_external_links=self.options.follow_external_links,
            )
        return PlannedUpload(payload, describe(payload, self.target))

    # -- hashing started before the upload -----------------------------------

    def adopt_scan(self, background: BackgroundScan) -> None:
        """Use ``background`` (a pass over one of the payloads to upload,
        already running) instead of starting one when that payload is sent.

        ``dqr-upload`` starts hashing its first payload before it imports the
        HTTP stack, so the hash (which the report contract needs in the
        metadata) runs on the second core while the first one is busy with
        start-up and the first requests.  The pass was started with the chunk
        checksum algorithm the server is expected to take (CRC-32, or none);
        it is dropped for another one if the server asks for another.
        """
        self._early[id(background.payload)] = background

    def _take_early(self, payload: Payload, algorithm: str | None) -> BackgroundScan | None:
        """The adopted pass over ``payload`` if it fits this upload's chunk grid
        and ``algorithm`` (a pass computing chunk digests fits no algorithm:
        they are dropped), else None (and the pass is stopped)."""
        background = self._early.pop(id(payload), None)
        if background is None:
            return None
        fits = background.scan.chunk_size == self.options.chunk_size and (
            algorithm is None or background.scan.algorithm == algorithm
        )
        if not fits:
            background.stop()
            return None
        background.scan.algorithm = algorithm
        return background

    def _drop_early(self, payload: Payload) -> None:
        background = self._early.pop(id(payload), None)
        if background is not None:
            background.stop()

    # -- the server ----------------------------------------------------------

    def capabilities(self, tus: TusClient, retrier: Retrier) -> Capabilities:
        """OPTIONS once per uploader (retried like any other request)."""
        with self._capabilities_lock:
            while self._capabilities is None:
                try:
                    self._capabilities = tus.capabilities()
                except TransientError as error:
                    retrier.failed(error)
            caps = self._capabilities
        return caps

    # -- one payload ---------------------------------------------------------

    def upload(self, item: str | Path | PlannedUpload) -> UploadResult:
        planned = item if isinstance(item, PlannedUpload) else self.plan(item)
        started = time.monotonic()
        payload = planned.payload
        session = self.session_factory()
        try:
            tus = TusClient(session, self.endpoint)
            retrier = Retrier(self.options.retry, payload.filename)
            caps = self.capabilities(tus, retrier)
            if caps.max_size is not None and payload.size > caps.max_size:
                raise RefusedError(
                    413,
                    f"{payload.source} is {payload.size} bytes; the server accepts at most "
                    f"{caps.max_size} (Tus-Max-Size)",
                )
            algorithm = None
            if self.options.checksums and caps.has("checksum"):
                algorithm = choose_checksum(caps.checksum_algorithms)
            streams = self._streams(payload.size, caps)
            overlap = caps.has("concatenation") and (
                streams > 1 or payload.size >= self.options.overlap_min_size
            )
            if overlap:
                # The sha256 is not known yet: the payload's identity stands in.
                # (Several partial uploads split the payload on the chunk grid.)
                grid = f":{self.options.chunk_size}" if streams > 1 else ""
                mode = f"partials:{streams}{grid}:{payload.identity()}"
                key = resume_key(self.server, planned.report.to_metadata(), payload.size, mode)
            else:
                hashed = self._scan(payload, algorithm)
                metadata = _with_sha256(planned, hashed.sha256)
                key = resume_key(self.server, metadata, payload.size, "single")
            with self.store.lock(key, payload.filename):
                try:
                    if overlap:
                        url, resumed, tally, sha256 = self._send_partials(
                            tus, planned, algorithm, streams, caps, key, retrier
                        )
                    else:
                        url, resumed, tally = self._send_single(
                            tus, planned, hashed, metadata, key, retrier
                        )
                        sha256 = hashed.sha256
                    record = self._verify(session, tus, url, payload, sha256, retrier)
                except RefusedError:
                    # Sending the same again would be refused again: forget it.
                    self.store.drop(key)
                    raise
                self.store.drop(key)
        finally:
            self._drop_early(payload)
            session.close()
        result = UploadResult(
            source=payload.source,
            kind=payload.kind,
            filename=payload.filename,
            upload_url=url,
            size=payload.size,
            sha256=sha256,
            report_url=record.get("report_url"),
            sent_bytes=tally.wire,
            resumed_from=resumed,
            seconds=time.monotonic() - started,
        )
        log.info(
            "Uploaded %s (%d bytes, sha256 %s) in %.1fs, %s sent%s",
            payload.source,
            result.size,
            result.sha256,
            result.seconds,
            human_bytes(result.sent_bytes),
            f", resumed at {human_bytes(resumed)}" if resumed else "",
        )
        return result

    def _streams(self, size: int, caps: Capabilities) -> int:
        wanted = self.options.parallel
        if wanted <= 1:
            return 1
        if not caps.has("concatenation"):
            log.warning(
                "the server has no concatenation extension: sending in one stream, not %d",
                wanted,
            )
            return 1
        chunks = -(-size // self.options.chunk_size)
        return max(1, min(wanted, chunks))

    def _scan(self, payload: Payload, algorithm: str | None) -> Scan:
        task = self.progress.task(payload.filename, payload.size, unit="hash")
        done = 0

        def on_block(count: int) -> None:
            nonlocal done
            done += count
            task.moveto(done)

        try:
            background = self._take_early(payload, algorithm)
            if background is None:
                return scan(payload, self.options.chunk_size, algorithm, on_block)
            while not background.wait(0.2):
                task.moveto(background.hashed)
            return background.result()
        finally:
            task.close()

    # -- one stream ----------------------------------------------------------

    def _send_single(
        self,
        tus: TusClient,
        planned: PlannedUpload,
        hashed: Scan,
        metadata: dict[str, str],
        key: str,
        retrier: Retrier,
    ) -> tuple[str, int, _Tally]:
        payload = planned.payload
        for attempt in (1, 2):
            url, offset = self._open_single(tus, payload, hashed, metadata, key, retrier)
            task = self.progress.task(payload.filename, payload.size, offset)
            tally = _Tally(task, 1, [offset])
            try:
                self._send_range(
                    tus, url, payload, hashed, 0, payload.size, offset, retrier, tally, 0
                )
                return url, offset, tally
            except UploadGoneError as error:
                self._forget_lost(key, payload, error, last=attempt == 2)
            finally:
                task.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _forget_lost(self, key: str, payload: Payload, error: UploadGoneError, last: bool) -> None:
        """The server no longer has the upload being sent: forget it (a new one
        is made on the next attempt), or give up if this was the ``last``."""
        self.store.drop(key)
        if last:
            raise GaveUpError(f"{payload.filename}: {error}") from None
        log.warning("%s; starting over", error)

    def _open_single(
        self,
        tus: TusClient,
        payload: Payload,
        hashed: Scan,
        metadata: dict[str, str],
        key: str,
        retrier: Retrier,
    ) -> tuple[str, int]:
        entry = self.store.get(key) if self.options.resume else None
        if entry is not None and entry.url:
            try:
                offset = self._status(tus, entry.url, retrier)
            except UploadGoneError:
                log.warning(
                    "%s: the server no longer has the unfinished upload %s; starting over",
                    payload.filename,
                    entry.url,
                )
                self.store.drop(key)
            else:
                log.info(
                    "Resuming %s at %s of %s (%s)",
                    payload.filename,
                    human_bytes(offset),
                    human_bytes(payload.size),
                    entry.url,
                )
                return entry.url, offset
        created = self._create(tus, payload.size, metadata, None, retrier)
        if self.options.resume:
            self.store.put(
                key, ResumeEntry(self.server, payload.size, hashed.sha256, url=created.url)
            )
        log.info(
            "Uploading %s (%s, kind=%s) to %s",
            payload.source,
            human_bytes(payload.size),
            payload.kind,
            created.url,
        )
        return created.url, created.offset

    def _create(self, tus: TusClient, length, metadata, concat, retrier: Retrier):  # type: ignore[no-untyped-def]
        while True:
            try:
                return tus.create(length, metadata, concat)
            except TransientError as error:
                retrier.failed(error)

    def _status(self, tus: TusClient, url: str, retrier: Retrier) -> int:
        while True:
            try:
                offset = tus.status(url).offset
                assert offset is not None  # status() raises for an answer without one
                return offset
            except TransientError as error:
                retrier.failed(error)

    def _final_status(self, tus: TusClient, url: str, retrier: Retrier) -> int | None:
        """A final upload's offset, None while it waits for partial uploads."""
        while True:
            try:
                return tus.status(url, final=True).offset
            except TransientError as error:
                retrier.failed(error)

    def _send_range(
        self,
        tus: TusClient,
        url: str,
        payload: Payload,
        hashed: Scan,
        base: int,
        length: int,
        offset: int,
        retrier: Retrier,
        tally: _Tally,
        stream: int,
        until: int | None = None,
    ) -> None:
        """Send bytes ``[base + offset, base + length)`` of the payload to ``url``
        (an upload of ``length`` bytes), PATCH by PATCH, until the server has
        them all (or, with ``until``, the upload's first ``until`` bytes)."""
        chunk = self.options.chunk_size
        checksum_failures = 0
        until = length if until is None else until
        # Resuming: the server may still be writing what the last run sent.
        sizer = PieceSizer(
            chunk,
            hashed.algorithm is not None,
            resuming=offset > 0,
            max_piece=self.options.max_piece if hashed.algorithm in (None, "crc32") else None,
            length=length,
        )
        while offset < until:
            start = base + offset
            line = (start // chunk + 1) * chunk  # the next line of the chunk grid
            limit = start + sizer.next()
            if start % chunk == 0 and limit > line:
                line = limit // chunk * chunk  # several whole chunks
            end, header = self._checksum_header(
                payload, hashed, start, min(base + until, line, limit)
            )
            log.debug("%s: PATCH %d bytes at offset %d", payload.filename, end - start, offset)
            body = SliceBody(payload, start, end, tally.sending(stream))
            try:
                response = tus.patch(url, offset, body, header)
                moved = new_offset(response)
                if not offset < moved <= length:
                    raise TransientError(f"PATCH: the server moved from offset {offset} to {moved}")
            except TransientError as error:
                if getattr(error, "status", None) == 460:
                    checksum_failures += 1
                    if checksum_failures >= MAX_CHECKSUM_FAILURES:
                        raise RefusedError(
                            460,
                            f"the server rejected the checksum of {payload.filename} "
                            f"at offset {start} {checksum_failures} times: {error}",
                        ) from None
                if not isinstance(error, OffsetConflict):
                    payload.check_unchanged()
                retrier.failed(error)
                sizer.failed()
                tally.acknowledge(stream, offset)
                before = offset
                offset = self._status(tus, url, retrier)
                if offset > before:
                    retrier.progress()
                tally.acknowledge(stream, offset)
                continue
            checksum_failures = 0
            sizer.succeeded(moved - offset)
            offset = moved
            retrier.progress()
            tally.acknowledge(stream, offset)

    def _checksum_header(
        self, payload: Payload, hashed: Scan, start: int, end: int
    ) -> tuple[int, str | None]:
        """Where the PATCH from ``start`` ends (``end`` or before it) and its
        Upload-Checksum: from the chunk digests of the grid if they are known
        (a piece of several chunks ends where they stop being known), else
        computed here for at most one chunk (pieces off the grid after a
        failure, or a digest the hashing thread is still far from)."""
        if not hashed.algorithm:
            return end, None
        span = hashed.span_digest(start, end)
        if span is None:
            end = min(end, (start // hashed.chunk_size + 1) * hashed.chunk_size)
            digest = checksum_range(payload, hashed.algorithm, start, end)
        else:
            end, digest = span
        return end, tus_checksum(hashed.algorithm, digest)

    # -- partial uploads, hashed while they are sent ----------------------------

    def _send_partials(
        self,
        tus: TusClient,
        planned: PlannedUpload,
        algorithm: str | None,
        streams: int,
        caps: Capabilities,
        key: str,
        retrier: Retrier,
    ) -> tuple[str, int, _Tally, str]:
        """Send the payload as ``streams`` partial uploads while a thread
        hashes it, then create the final upload with the full metadata.

        What the resume store holds, and when: the partial uploads' URLs as
        soon as each is created; the sha256 once it is known (before the
        final upload is asked for); the final upload's URL as soon as the
        server answers.  A re-run therefore continues the partial uploads,
        hashes only if no sha256 was kept, and never creates a second final
        upload once the first one's URL is kept.
        """
        payload = planned.payload
        for attempt in (1, 2):
            entry = self._partials_entry(tus, payload, key, retrier)
            background = None
            if entry.sha256:
                self._drop_early(payload)  # known from the run that was interrupted
            else:
                background = (
                    self._take_early(payload, algorithm)
                    or BackgroundScan(payload, self.options.chunk_size, algorithm).start()
                )
            try:
                return self._drive_partials(
                    tus, planned, algorithm, streams, caps, entry, background, key, retrier
                )
            except UploadGoneError as error:
                self._forget_lost(key, payload, error, last=attempt == 2)
            finally:
                if background is not None:
                    background.stop()
        raise AssertionError("unreachable")  # pragma: no cover

    def _partials_entry(
        self, tus: TusClient, payload: Payload, key: str, retrier: Retrier
    ) -> ResumeEntry:
        """The resume entry to go on with (a new one if there is none, or if
        the final upload it names is gone)."""
        entry = self.store.get(key) if self.options.resume else None
        if entry is not None and entry.url:
            try:
                self._final_status(tus, entry.url, retrier)
            except UploadGoneError:
                log.warning(
                    "%s: the server no longer has the final upload %s; starting over",
                    payload.filename,
                    entry.url,
                )
                self.store.drop(key)
                entry = None
        return entry or ResumeEntry(self.server, payload.size, "")

    def _drive_partials(
        self,
        tus: TusClient,
        planned: PlannedUpload,
        algorithm: str | None,
        streams: int,
        caps: Capabilities,
        entry: ResumeEntry,
        background: BackgroundScan | None,
        key: str,
        retrier: Retrier,
    ) -> tuple[str, int, _Tally, str]:
        payload = planned.payload
        parts = split_ranges(payload.size, streams, self.options.chunk_size)
        metadata = planned.report.to_metadata()
        urls, offsets = self._open_partials(tus, payload, parts, entry, key, retrier, metadata)
        resumed = sum(offsets)
        self._log_start(payload, urls, resumed)
        hashed = (
            background.scan
            if background is not None
            else Scan(entry.sha256, payload.size, self.options.chunk_size, algorithm)
        )
        lengths = [end - start for start, end in parts]
        stops = list(lengths)
        if not entry.url and caps.has("concatenation-unfinished"):
            # Hold the payload's last bytes back until the final upload exists:
            # creating it is then quick (nothing to join and publish yet), and
            # the publication happens in the last PATCH, whose lost answer
            # costs a HEAD, not a second final upload.
            stops[-1] = max(offsets[-1], lengths[-1] - TAIL)
        task = self.progress.task(payload.filename, payload.size, resumed)
        tally = _Tally(task, len(parts), offsets)
        try:
            self._send_streams(tus, payload, hashed, parts, urls, offsets, stops, tally, retrier)
            if not entry.url:
                if background is not None:
                    entry.sha256 = background.result().sha256
                self._remember(key, entry)
                faults.point("before-final")
                metadata = _with_sha256(planned, entry.sha256)
                final = self._create(tus, None, metadata, "final;" + " ".join(urls), retrier)
                entry.url = final.url
                self._remember(key, entry)
                log.debug("%s: final upload %s", payload.filename, final.url)
                faults.point("after-final")
            self._send_streams(tus, payload, hashed, parts, urls, stops, lengths, tally, retrier)
        finally:
            task.close()
        return entry.url, resumed, tally, entry.sha256

    def _remember(self, key: str, entry: ResumeEntry) -> None:
        if self.options.resume:
            self.store.put(key, entry)

    def _open_partials(
        self,
        tus: TusClient,
        payload: Payload,
        parts: list[tuple[int, int]],
        entry: ResumeEntry,
        key: str,
        retrier: Retrier,
        metadata: dict[str, str],
    ) -> tuple[list[str], list[int]]:
        """The partial uploads' URLs and offsets: those the entry names and the
        server still has, and new ones (remembered as they are created)."""
        if len(entry.partials) > len(parts):
            entry.partials = []
        urls: list[str] = []
        offsets: list[int] = []
        for index, (start, end) in enumerate(parts):
            url = entry.partials[index] if index < len(entry.partials) else None
            if url is not None:
                try:
                    offsets.append(self._status(tus, url, retrier))
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
            # The report metadata (no sha256 yet) lets the server refuse the
            # upload (authorization, project, size) before any byte is sent.
            created = self._create(tus, end - start, metadata, "partial", retrier)
            urls.append(created.url)
            offsets.append(created.offset)
            entry.partials = urls + entry.partials[len(urls) :]
            self._remember(key, entry)
        return urls, offsets

    def _log_start(self, payload: Payload, urls: list[str], resumed: int) -> None:
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

    def _send_streams(
        self,
        tus: TusClient,
        payload: Payload,
        hashed: Scan,
        parts: list[tuple[int, int]],
        urls: list[str],
        offsets: list[int],
        stops: list[int],
        tally: _Tally,
        retrier: Retrier,
    ) -> None:
        """Send each partial upload ``index`` from ``offsets[index]`` to
        ``stops[index]``: one in this thread (on this session, with the
        payload's retrier), several at once on threads of their own (each with
        its own session and retrier)."""
        todo = [index for index in range(len(parts)) if offsets[index] < stops[index]]

        def send(index: int, own_tus: TusClient, part_retrier: Retrier) -> None:
            start, end = parts[index]
            self._send_range(
                own_tus,
                urls[index],
                payload,
                hashed,
                start,
                end - start,
                offsets[index],
                part_retrier,
                tally,
                index,
                until=stops[index],
            )

        def label(index: int) -> str:
            return payload.filename if len(parts) == 1 else f"{payload.filename} part {index + 1}"

        if len(todo) == 1:
            send(todo[0], tus, retrier)
            return
        cancel = threading.Event()

        def on_thread(index: int) -> None:
            own = self.session_factory()
            try:
                part_retrier = Retrier(self.options.retry, label(index), cancel)
                send(index, TusClient(own, self.endpoint), part_retrier)
            except BaseException:
                cancel.set()
                raise
            finally:
                own.close()

        if not todo:
            return
        with ThreadPoolExecutor(len(todo), thread_name_prefix="dqr-part") as pool:
            futures = [pool.submit(on_thread, index) for index in todo]
            errors = [f.exception() for f in futures]
        failures = [e for e in errors if e is not None]
        if failures:
            gone = [e for e in failures if isinstance(e, UploadGoneError)]
            raise gone[0] if gone else _most_telling(failures)

    # -- the server's record -------------------------------------------------

    def _verify(
        self,
        session: requests.Session,
        tus: TusClient,
        url: str,
        payload: Payload,
        sha256: str,
        retrier: Retrier,
    ) -> dict:
        """The server's record must say published, with our size and sha256.

        While it does not yet, the upload is asked about (HEAD) before each
        retry: a server finishes there what an interrupted request left
        undone (such as joining a final upload).
        """
        record_url = f"{self.server}/api/v1/uploads/{upload_id(url)}"
        first = True
        while True:
            try:
                if not first:
                    tus.status(url, final=True)  # the server finishes what is pending
                first = False
                try:
                    response = session.get(record_url)
                except requests.RequestException as error:
                    raise TransientError(f"upload record: {error}") from error
                check_response(response, "upload record")
                record = response.json()
                state = record.get("state")
                if state == FAILED:
                    raise RefusedError(422, str(record.get("error") or "the server failed it"))
                if state != PUBLISHED:
                    raise TransientError(f"the server is still finishing the upload ({state})")
                break
            except TransientError as error:
                retrier.failed(error)
        if record.get("length") != payload.size or record.get("sha256") != sha256:
            raise RefusedError(
                409,
                f"the server's record of {url} does not match what was sent: size "
                f"{record.get('length')} (sent {payload.size}), sha256 {record.get('sha256')} "
                f"(sent {sha256})",
            )
        return record

    # -- several payloads ----------------------------------------------------

    def upload_many(
        self, items: Iterable[str | Path | PlannedUpload], jobs: int = 1
    ) -> list[Outcome]:
        """Upload each item (``jobs`` at a time); never raises for one item's
        failure: each outcome holds its result or its error."""
        todo = list(items)

        def one(item: str | Path | PlannedUpload) -> Outcome:
            path = item.payload.source if isinstance(item, PlannedUpload) else Path(item)
            try:
                return Outcome(path, result=self.upload(item))
            except DqrxferError as error:
                text = str(error)
                log.error("%s", text if text.startswith(path.name) else f"{path}: {text}")
                return Outcome(path, error=error)

        if jobs <= 1 or len(todo) <= 1:
            return [one(item) for item in todo]
        with ThreadPoolExecutor(min(jobs, len(todo)), thread_name_prefix="dqr-job") as pool:
            return list(pool.map(one, todo))


def _with_sha256(planned: PlannedUpload, sha256: str) -> dict[str, str]:
    """The upload's metadata, sha256 included."""
    return contract.ReportUpload(**{**planned.report.__dict__, "sha256": sha256}).to_metadata()


def split_ranges(size: int, parts: int, chunk_size: int) -> list[tuple[int, int]]:
    """Split ``[0, size)`` into at most ``parts`` ranges whose boundaries fall
    on the chunk grid (so precomputed chunk checksums apply to every part)."""
    chunks = -(-size // chunk_size)
    parts = max(1, min(parts, chunks))
    ranges = []
    for index in range(parts):
        first = chunks * index // parts
        last = chunks * (index + 1) // parts
        ranges.append((first * chunk_size, min(size, last * chunk_size)))
    return ranges


def _most_telling(errors: list[BaseException]) -> BaseException:
    """The error whose exit code :func:`worst_exit_code` would pick."""
    codes = [getattr(error, "exit_code", 1) for error in errors]
    return errors[codes.index(worst_exit_code(codes))]


def upload(
    server: str,
    paths: Iterable[str | Path],
    target: ReportTarget,
    options: UploadOptions | None = None,
    session_factory: SessionFactory | None = None,
    jobs: int = 1,
) -> list[UploadResult]:
    """Upload ``paths`` into one report and return their results; raise the
    first error if any path failed (after the others were tried)."""
    uploader = ReportUploader(server, target, options, session_factory)
    outcomes = uploader.upload_many(paths, jobs)
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error
    return [outcome.result for outcome in outcomes if outcome.result is not None]
