"""One payload's upload under way: what each of its steps needs, in one object."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .assumed import Assumption
from .blocks import PreparedHeaders
from .errors import DqrxferError, RefusedError, TransientError
from .gate import Gate, Superseded
from .hashing import EarlyScans
from .hints import unknown_project
from .payload import Payload, Scan
from .planning import PlannedUpload, UploadOptions
from .progress import Progress
from .resume import ResumeSlot
from .retry import Retrier
from .sender import RangeSender, Tally, piece_checksums, server_offset
from .session import SessionFactory
from .transport import Created, SliceBody, TusClient
from .units import MiB

log = logging.getLogger("dqr-xfer")

#: The most bytes a creation request carries (creation-with-upload): if the
#: connection is lost before the answer, the upload's URL is lost with it
#: and those bytes are sent again to a new upload, so only an upload whose
#: loss is cheap goes whole in its POST.  A larger one would gain nothing by
#: sending its first bytes in the POST: the PATCH for the rest waits for the
#: POST's answer (the URL) all the same.
CARRIED_MAX = 4 * MiB


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
    #: Block checksums computed ahead for the first PATCH (see
    #: :class:`~dqrxfer.blocks.PreparedHeaders`).
    prepared: PreparedHeaders = field(default_factory=PreparedHeaders)
    #: The server has creation-with-upload (see :meth:`create`).
    creation_with_upload: bool = False
    #: Made with capabilities assumed, not yet the server's answer: checked
    #: before sending any byte too (see :mod:`dqrxfer.assumed`).
    assumption: Assumption | None = None

    @property
    def payload(self) -> Payload:
        return self.planned.payload

    @property
    def endpoint(self) -> str:
        return f"{self.server}/files/"

    def create(
        self,
        length: int | None,
        metadata: Mapping[str, str],
        concat: str | None,
        carry: Scan | None = None,
    ) -> Created:
        """POST a new upload (retried).  The refusal of a project the server
        does not have is a usage error (exit code 2) naming the projects.
        With ``carry`` (the payload's hashing pass), an upload of at most
        :data:`CARRIED_MAX` bytes carries them in the POST if the server has
        creation-with-upload and no gate or assumption holds them back: one
        round trip less; if that POST fails, the next goes without them.
        With capabilities assumed, not yet checked, it is tried once: what
        went wrong may be the assumption (the uploader asks the server's
        capabilities then, and tries again as they say)."""
        try:
            if carry is not None and length is not None and self._may_carry(length):
                try:
                    return self._create_carrying(length, metadata, concat, carry)
                except TransientError as error:
                    # The upload's URL came with no answer: its bytes are lost
                    # (a few MB at most); the next try makes it without them.
                    self.retrier.failed(error)
            if self.assumption is not None and not self.assumption.checked:
                return self.tus.create(length, metadata, concat)
            return self.retrier.call(lambda: self.tus.create(length, metadata, concat))
        except RefusedError as error:
            usage = unknown_project(error)
            if usage is None:
                raise
            raise usage from None

    def _may_carry(self, length: int) -> bool:
        """Whether the creation of an upload of ``length`` bytes may carry
        them: at most :data:`CARRIED_MAX`, and one piece as the options size
        them (``max_piece``, or ``chunk_size`` when pieces are pinned to it)."""
        piece = self.options.max_piece or self.options.chunk_size
        return (
            self.creation_with_upload
            and 0 < length <= min(CARRIED_MAX, piece)
            and (self.gate is None or self.gate.opened)
            and (self.assumption is None or self.assumption.checked)
        )

    def _create_carrying(
        self, length: int, metadata: Mapping[str, str], concat: str | None, hashed: Scan
    ) -> Created:
        """POST the upload with its bytes (those one checksum covers, see
        :func:`~dqrxfer.sender.piece_checksums`), once."""
        end, checksum, blocks = piece_checksums(
            self.payload, hashed, 0, length, self.block_checksums
        )
        body = SliceBody(self.payload, 0, end)
        log.debug("%s: POST with %d bytes", self.payload.filename, end)
        return self.tus.create(length, metadata, concat, body, checksum, blocks)

    def proceed(self, urls: Sequence[str]) -> None:
        """Return when the payload's bytes may go to ``urls`` (the uploads just
        made or found).  If the gate closes instead, terminate them (DELETE,
        once each: the server expires what is left), forget the resume entry
        and raise :class:`Superseded`; the same, raising
        :class:`~dqrxfer.assumed.Mistaken`, if they were made with assumed
        capabilities that the server's answer contradicts."""
        if self.gate is not None and not self.gate.wait():
            self._withdraw(urls, "the upload made in advance is not needed")
            raise Superseded(self.payload.filename)
        if self.assumption is not None:
            try:
                self.assumption.confirm()
            except BaseException:
                self._withdraw(urls, "the server's capabilities are not those assumed")
                raise

    def _withdraw(self, urls: Sequence[str], why: str) -> None:
        """Terminate ``urls`` (no byte sent to them) and forget the resume entry."""
        for url in urls:
            with contextlib.suppress(DqrxferError):
                self.tus.terminate(url)
        self.resume.drop()
        log.debug("%s: %s: terminated", self.payload.filename, why)

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
            self.prepared,
        )
