"""The upload API: send report payloads with tus, resumably, and check the result.

``dqr-upload`` and ``dqr-batch-upload`` are thin layers over this module, and
other tools can call it too::

    from dqrxfer.upload import ReportTarget, upload

    results = upload("https://dqr.example.org", ["index.html", "plots/"],
                     ReportTarget("O4", "S230518h", "llo", 1))
    print(results[0].report_url)

or, to keep a session, options and progress across calls, use
:class:`ReportUploader` directly.

One payload travels like this (each step in a module of its own):

1. plan (:mod:`~dqrxfer.planning`): the path becomes a payload (file, tarball
   or packed directory) and the metadata is checked against the report
   contract, before any traffic;
2. ask (:mod:`~dqrxfer.capabilities`): the server's capabilities (OPTIONS,
   once per uploader, or remembered from a run within the hour) give its size
   limit, the chunk checksum to send, and whether it can concatenate uploads.
   :meth:`ReportUploader.settle_and_upload` asks the links API what the server
   has of the report at the same time (:mod:`~dqrxfer.settlement`,
   :mod:`~dqrxfer.reupload`), and creates the first upload meanwhile, held at
   a gate before its first byte (:mod:`~dqrxfer.gate`);
3. hash and open: the report contract puts the payload's sha256 in the
   metadata of the upload that is published.  A small payload, or any payload
   for a server without concatenation, is hashed first
   (:mod:`~dqrxfer.hashing`) and sent as one upload (:mod:`~dqrxfer.single`):
   the resume store is asked for an unfinished upload of the same payload to
   the same place; if the server still has it, the upload goes on from the
   server's offset, otherwise a new upload is created and remembered.  A
   payload of at least ``overlap_min_size`` (or with ``parallel=N``) for a
   server with concatenation is sent as partial uploads while a thread hashes
   it, and a final upload made of them carries the sha256
   (:mod:`~dqrxfer.partials`): hashing costs no time of its own;
4. send (:mod:`~dqrxfer.sender`): PATCH requests streamed from disk (with
   ``sendfile`` where the connection allows), each as large as
   :class:`~dqrxfer.pieces.PieceSizer` says: ``chunk_size`` bytes, growing to
   ``max_piece`` while the link holds, smaller after failures; on a long link
   as many bytes as take many round trips at the rate measured so far.  After
   a failure the server's offset is asked again (HEAD, at once after a lost
   connection) and sending continues from there, so only bytes that never
   arrived are sent again; every request is retried as :mod:`~dqrxfer.retry`
   says;
5. verify (:mod:`~dqrxfer.verify`): the server's record of the upload must
   say ``published`` with our size and sha256; then the resume entry is
   dropped and the report URL is returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from .assumed import EXPECTED, Assumption, Mistaken
from .blocks import max_piece as block_max_piece
from .capabilities import (
    CapabilityCache,
    RememberedCapabilities,
    block_checksums,
    check_size,
    chunk_algorithm,
    explained_by_stale,
    hashed_while_sent,
    stream_count,
)
from .errors import DqrxferError, RefusedError
from .gate import Gate, Superseded
from .hashcache import HashCache
from .hashing import EarlyScans
from .job import CARRIED_MAX, Job
from .linkmemory import LADDER, RememberedLinks
from .partials import TAIL, send_partials
from .payload import BackgroundScan, Payload, payload_for
from .pieces import FIRST_CUT_SHARE, MIN_PIECE, SPLIT_ALIGN, PieceSizer, split_ranges
from .planning import (
    OVERLAP_MIN_SIZE,
    PlannedUpload,
    ReportTarget,
    UploadOptions,
    describe,
)
from .progress import NullProgress, Progress, human_bytes
from .resume import ResumeSlot, ResumeStore, resume_key
from .retry import Retrier
from .sender import Tally
from .session import SessionFactory, WarmSessions, make_session
from .settlement import AdvanceUpload, Settlement, Settler, start_thread
from .single import send_single
from .transport import Capabilities, TusClient
from .verify import upload_id, verify

__all__ = [
    "FIRST_CUT_SHARE",
    "MIN_PIECE",
    "OVERLAP_MIN_SIZE",
    "TAIL",
    "Outcome",
    "PieceSizer",
    "PlannedUpload",
    "ReportTarget",
    "ReportUploader",
    "Settlement",
    "UploadOptions",
    "UploadResult",
    "describe",
    "split_ranges",
    "upload",
    "upload_id",
]

log = logging.getLogger("dqr-xfer")


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
        self._capabilities = CapabilityCache(self.endpoint, RememberedCapabilities())
        #: what uploads to the server measured, for the stream count (auto)
        self._links = RememberedLinks()
        self._scans = EarlyScans(self.options.chunk_size)
        #: sessions whose connection is open already (see :meth:`settle`)
        self._warm = WarmSessions(self.session_factory)
        #: digests of local files from earlier runs (see :meth:`settle`)
        self.hashes = HashCache()
        self._settler = Settler(
            self.server,
            self.options,
            self.session_factory,
            self._warm,
            self._ask_capabilities,
            self._scans,
            self.hashes,
        )

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
        self._scans.adopt(background)

    # -- the server ----------------------------------------------------------

    def capabilities(self, tus: TusClient, retrier: Retrier) -> Capabilities:
        """The server's capabilities: remembered from an earlier run within
        the hour, else OPTIONS once per uploader (retried like any other
        request); see :mod:`~dqrxfer.capabilities`."""
        return self._capabilities.get(tus, retrier)

    def _ask_capabilities(self) -> requests.Session:
        """The capabilities asked early (:meth:`CapabilityCache.ask_early`) on
        a session of its own, which is returned (its connection open if
        OPTIONS was sent)."""
        session = self.session_factory()
        try:
            self._capabilities.ask_early(TusClient(session, self.endpoint))
        except BaseException:
            session.close()
            raise
        return session

    # -- what the server has already ------------------------------------------

    def settle_and_upload(
        self,
        planned: list[PlannedUpload],
        jobs: int = 1,
        force: bool = False,
        on_todo: Callable[[list[PlannedUpload]], None] | None = None,
    ) -> tuple[Settlement, list[Outcome]]:
        """:meth:`settle`, then :meth:`upload_many` what is left (told to
        ``on_todo`` first), with the first payload's upload created while the
        server's copy is asked for (:mod:`~dqrxfer.gate`): one round trip
        fewer before the first byte."""
        if not planned or force:
            settlement = self.settle(planned, force=force)
            if on_todo is not None:
                on_todo(settlement.todo)
            return settlement, self.upload_many(settlement.todo, jobs)
        first = planned[0]
        gate = Gate()
        advance = AdvanceUpload(first, gate, start_thread(lambda: self._outcome(first, gate)))
        try:
            settlement = self.settle(planned, advance=advance)
        finally:
            if not gate.decided:  # the comparison failed: the upload is not wanted
                advance.withdraw()
        if on_todo is not None:
            on_todo(settlement.todo)
        early = advance.outcome.result() if gate.opened else None
        rest = [item for item in settlement.todo if not (gate.opened and item is first)]
        outcomes = self.upload_many(rest, jobs)
        return settlement, ([early] if early is not None else []) + outcomes

    def settle(
        self,
        planned: list[PlannedUpload],
        dry_run: bool = False,
        force: bool = False,
        advance: AdvanceUpload[Outcome | None] | None = None,
    ) -> Settlement:
        """What is left to send of ``planned`` after comparing it with the
        server's copy of the report (:meth:`Settler.settle
        <dqrxfer.settlement.Settler.settle>`)."""
        return self._settler.settle(planned, dry_run, force, advance)

    def close(self) -> None:
        """Close the sessions :meth:`settle` kept for uploads, if no upload took them."""
        self._warm.close()

    # -- one payload ---------------------------------------------------------

    def upload(self, item: str | Path | PlannedUpload, gate: Gate | None = None) -> UploadResult:
        """Send one payload (``gate``: made before the comparison with the
        server's copy, it sends no byte before the gate opens)."""
        planned = item if isinstance(item, PlannedUpload) else self.plan(item)
        started = time.monotonic()
        payload = planned.payload
        session = self._warm.take()
        try:
            tus = TusClient(session, self.endpoint)
            assumption = None
            if gate is not None and self._capabilities.at_hand() is None:
                # A first contact: OPTIONS is on its way (beside the links
                # API); the upload is made meanwhile (see dqrxfer.assumed).
                retrier = Retrier(self.options.retry, payload.filename, gate.closed)

                def ask() -> Capabilities:
                    caps = self.capabilities(tus, retrier)
                    # The link's round trip as OPTIONS found it (this
                    # connection has seen only the creation's, slower).
                    if self._capabilities.round_trip is not None:
                        tus.link.saw_answer(self._capabilities.round_trip)
                    return caps

                assumption = Assumption(EXPECTED, payload.size, ask)
                caps = EXPECTED
            else:
                retrier = Retrier(self.options.retry, payload.filename)
                caps = self.capabilities(tus, retrier)
            while True:
                try:
                    url, resumed, tally, sha256, record = self._send(
                        planned, session, tus, retrier, caps, gate, assumption
                    )
                    break
                except Mistaken as mistaken:
                    log.debug("%s: %s: made again", payload.filename, mistaken)
                    caps, assumption = mistaken.actual, None
                except DqrxferError as error:
                    if assumption is not None and not assumption.checked:
                        # Failed before the server's answer was in: the
                        # capabilities assumed may explain it; unless the
                        # comparison failed or wants no upload (retrying
                        # here would only repeat its complaints), ask them
                        # and try as they say.
                        assert gate is not None
                        if not gate.wait():
                            raise Superseded(payload.filename) from None
                        log.debug(
                            "%s: %s; asking the server's capabilities", payload.filename, error
                        )
                        retrier = Retrier(self.options.retry, payload.filename)
                        caps, assumption = self.capabilities(tus, retrier), None
                        continue
                    fresh = None
                    if isinstance(error, RefusedError) and explained_by_stale(error):
                        fresh = self._capabilities.refresh(tus, retrier, caps)
                    if fresh is None:
                        raise
                    log.info(
                        "%s: %s; the server's capabilities were remembered from an earlier "
                        "run: asked again, trying once more",
                        payload.filename,
                        error,
                    )
                    caps = fresh
        finally:
            self._scans.drop(payload)
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
            "Uploaded %s (%s, sha256 %s) in %.1fs, %s sent%s",
            payload.source,
            human_bytes(result.size),
            result.sha256,
            result.seconds,
            human_bytes(result.sent_bytes),
            f", resumed at {human_bytes(resumed)}" if resumed else "",
        )
        return result

    def _send(
        self,
        planned: PlannedUpload,
        session: requests.Session,
        tus: TusClient,
        retrier: Retrier,
        caps: Capabilities,
        gate: Gate | None,
        assumption: Assumption | None = None,
    ) -> tuple[str, int, Tally, str, dict[str, Any]]:
        """Send ``planned`` as ``caps`` allow (assumed until ``assumption`` is
        confirmed), and verify the server's record."""
        payload = planned.payload
        check_size(payload, caps)
        algorithm = chunk_algorithm(self.options, caps)
        auto = self.options.parallel is None
        learnt = self._links.get(self.endpoint) if auto else None
        streams = stream_count(self.options, payload.size, caps, learnt)
        overlap = hashed_while_sent(self.options, payload.size, streams, caps)
        if overlap:
            key = self._partials_key(planned, streams)
            if auto and self.options.resume and self.store.get(key) is None:
                # An interrupted run may have chosen another count: go on with it.
                for other in LADDER:
                    if other != streams and self.store.get(self._partials_key(planned, other)):
                        streams, key = other, self._partials_key(planned, other)
                        break
        else:
            hashed = self._scans.finished(payload, algorithm, self.progress)
            metadata = planned.metadata(hashed.sha256)
            key = resume_key(self.server, metadata, payload.size, "single")
        job = Job(
            planned=planned,
            options=self.options,
            server=self.server,
            tus=tus,
            retrier=retrier,
            resume=ResumeSlot(self.store, key, self.options.resume),
            progress=self.progress,
            session_factory=self.session_factory,
            scans=self._scans,
            block_checksums=block_checksums(self.options, algorithm, caps),
            gate=gate,
            assumption=assumption,
            creation_with_upload=caps.has("creation-with-upload"),
        )
        if job.block_checksums and algorithm and streams == 1 and payload.size > CARRIED_MAX:
            # The first PATCH of a new upload (the whole payload, as far as
            # one header reaches): its digests are computed while it is created.
            first = min(payload.size, block_max_piece(algorithm))
            job.prepared.prepare(payload, algorithm, 0, first)
        with self.store.lock(key, payload.filename):
            try:
                began = time.monotonic()
                if overlap:
                    url, resumed, tally, sha256 = send_partials(job, algorithm, streams, caps)
                else:
                    url, resumed, tally = send_single(job, hashed, metadata)
                    sha256 = hashed.sha256
                # Sent and published (in the answer to the last PATCH).
                seconds = time.monotonic() - began
                record = verify(job, session, url, sha256)
            except RefusedError:
                # Sending the same again would be refused again: forget it.
                job.resume.drop()
                raise
            job.resume.drop()
        if overlap and not resumed and payload.size >= self.options.overlap_min_size:
            rate = payload.size / max(seconds, 1e-3)
            self._links.saw(self.endpoint, streams, rate, tus.link.round_trip)
        return url, resumed, tally, sha256, record

    def _partials_key(self, planned: PlannedUpload, streams: int) -> str:
        """The resume key of ``planned`` sent as ``streams`` partial uploads.
        The sha256 is not known yet: the payload's identity stands in.
        Several partial uploads split the payload in equal parts on the
        :data:`~dqrxfer.pieces.SPLIT_ALIGN` grid: the key names the split,
        so that the parts of another split are never taken for these."""
        grid = f":equal{SPLIT_ALIGN}" if streams > 1 else ""
        mode = f"partials:{streams}{grid}:{planned.payload.identity()}"
        return resume_key(self.server, planned.report.to_metadata(), planned.payload.size, mode)

    # -- several payloads ----------------------------------------------------

    def _outcome(
        self, item: str | Path | PlannedUpload, gate: Gate | None = None
    ) -> Outcome | None:
        """:meth:`upload`'s result or error (logged); None if ``gate`` closed."""
        path = item.payload.source if isinstance(item, PlannedUpload) else Path(item)
        try:
            return Outcome(path, result=self.upload(item, gate))
        except Superseded:
            return None
        except DqrxferError as error:
            text = str(error)
            log.error("%s", text if text.startswith(path.name) else f"{path}: {text}")
            return Outcome(path, error=error)

    def upload_many(
        self, items: Iterable[str | Path | PlannedUpload], jobs: int = 1
    ) -> list[Outcome]:
        """Upload each item (``jobs`` at a time); never raises for one item's
        failure: each outcome holds its result or its error."""
        todo = list(items)

        def one(item: str | Path | PlannedUpload) -> Outcome:
            outcome = self._outcome(item)
            assert outcome is not None  # no gate: never superseded
            return outcome

        try:
            if jobs <= 1 or len(todo) <= 1:
                return [one(item) for item in todo]
            with ThreadPoolExecutor(min(jobs, len(todo)), thread_name_prefix="dqr-job") as pool:
                return list(pool.map(one, todo))
        finally:
            self.close()


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
