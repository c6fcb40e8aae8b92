"""One payload's upload under way: what each of its steps needs, in one object."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import DqrxferError, RefusedError
from .gate import Gate, Superseded
from .hashing import EarlyScans
from .hints import unknown_project
from .payload import Payload, Scan
from .planning import PlannedUpload, UploadOptions
from .progress import Progress
from .resume import ResumeSlot
from .retry import Retrier
from .sender import RangeSender, Tally, server_offset
from .session import SessionFactory
from .transport import Created, TusClient

log = logging.getLogger("dqr-xfer")


@dataclass
class Job:
    """One payload sent to ``server``: on the session of ``tus``, retried by
    ``retrier``, remembered in ``resume``, shown by ``progress``.
    ``session_factory`` makes the sessions of further streams; ``scans``
    holds the hashing passes started before the upload."""

    planned: PlannedUpload
    options: UploadOptions
    server: str
    tus: TusClient
    retrier: Retrier
    resume: ResumeSlot
    progress: Progress
    session_factory: SessionFactory
    scans: EarlyScans
    #: The server checks blocks (``block-checksum``) and chunks are checksummed.
    block_checksums: bool = False
    #: Made before the comparison with the server's copy: wait here before
    #: sending any byte (see :mod:`dqrxfer.gate`).
    gate: Gate | None = None

    @property
    def payload(self) -> Payload:
        return self.planned.payload

    @property
    def endpoint(self) -> str:
        return f"{self.server}/files/"

    def create(
        self, length: int | None, metadata: Mapping[str, str], concat: str | None
    ) -> Created:
        """POST a new upload (retried).  The refusal of a project the server
        does not have is a usage error (exit code 2) naming the projects."""
        try:
            return self.retrier.call(lambda: self.tus.create(length, metadata, concat))
        except RefusedError as error:
            usage = unknown_project(error)
            if usage is None:
                raise
            raise usage from None

    def proceed(self, urls: Sequence[str]) -> None:
        """Return when the payload's bytes may go to ``urls`` (the uploads just
        made or found).  If the gate closes instead, terminate them (DELETE,
        once each: the server expires what is left), forget the resume entry
        and raise :class:`Superseded`."""
        if self.gate is None or self.gate.wait():
            return
        for url in urls:
            with contextlib.suppress(DqrxferError):
                self.tus.terminate(url)
        self.resume.drop()
        log.debug("%s: the upload made in advance is not needed: terminated", self.payload.filename)
        raise Superseded(self.payload.filename)

    def offset(self, url: str) -> int:
        """The upload's offset on the server (HEAD, retried)."""
        return server_offset(self.tus, url, self.retrier)

    def sender(
        self,
        url: str,
        hashed: Scan,
        span: tuple[int, int],
        tally: Tally,
        stream: int = 0,
        tus: TusClient | None = None,
        retrier: Retrier | None = None,
    ) -> RangeSender:
        """The sender of the payload's bytes ``span`` to the upload ``url``
        (on this job's session and retrier unless ``tus`` and ``retrier``)."""
        start, end = span
        return RangeSender(
            tus or self.tus,
            url,
            self.payload,
            hashed,
            start,
            end - start,
            self.options.chunk_size,
            self.options.max_piece,
            retrier or self.retrier,
            tally,
            stream,
            self.block_checksums,
        )
