"""Sending one upload's bytes, PATCH by PATCH, until the server has them.

:class:`RangeSender` is the sending loop of the client: each PATCH's size
comes from a :class:`~dqrxfer.pieces.PieceSizer`, its ``Upload-Checksum``
from the hashing pass's chunk digests; after a failure the server's offset is
asked (HEAD) and sending goes on from there, so only bytes that never arrived
are sent again.  :class:`Tally` counts the bytes of a payload's streams for
the progress bar and the bytes put on the wire.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .blocks import PreparedHeaders, block_checksum, block_size
from .blocks import max_piece as block_max_piece
from .crc32 import crc32_combine
from .errors import RefusedError, TransientError
from .payload import Payload, Scan, checksum_range, tus_checksum
from .pieces import LONG_ROUND_TRIP, PieceSizer
from .progress import Task
from .retry import Retrier
from .transport import GatedBody, OffsetConflict, SliceBody, TusClient, new_offset

log = logging.getLogger("dqr-xfer")

#: Consecutive checksum mismatches (460) on one chunk before the server's
#: refusal is taken as final.
MAX_CHECKSUM_FAILURES = 3


class Tally:
    """Bytes of one payload: acknowledged per stream, plus those in flight;
    feeds the progress bar and counts the bytes put on the wire.

    Stream ``index`` sends to the upload ``uploads[index]`` (its URL and
    length), which the server holds ``start[index]`` bytes of."""

    def __init__(
        self, task: Task, uploads: Sequence[tuple[str, int]], start: Sequence[int]
    ) -> None:
        self.task = task
        self.uploads = list(uploads)
        self.lock = threading.Lock()
        self.acked = list(start) + [0] * (len(uploads) - len(start))
        self.flight = [0] * len(uploads)
        self.wire = 0
        for (url, length), offset in zip(self.uploads, self.acked, strict=True):
            task.acknowledged(url, length, offset)
        task.confirmed(sum(self.acked))

    def sending(self, stream: int) -> Callable[[int], None]:
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
            on_server = sum(self.acked)
            done = on_server + sum(self.flight)
        url, length = self.uploads[stream]
        self.task.acknowledged(url, length, offset)
        self.task.moveto(done)
        self.task.confirmed(on_server)


def server_offset(tus: TusClient, url: str, retrier: Retrier) -> int:
    """The upload's offset on the server (HEAD, retried)."""

    def attempt() -> int:
        offset = tus.status(url).offset
        assert offset is not None  # status() raises for an answer without one
        return offset

    return retrier.call(attempt)


@dataclass(frozen=True)
class Hold:
    """Bytes of an upload from ``offset`` on wait for ``wait()`` to return."""

    offset: int
    wait: Callable[[], None]


@dataclass
class RangeSender:
    """Sends bytes ``[base, base + length)`` of ``payload`` to the upload at
    ``url`` (an upload of ``length`` bytes), as stream ``stream`` of ``tally``.

    ``hashed`` gives the chunk digests (``hashed.algorithm`` None: no
    ``Upload-Checksum``); ``chunk_size`` and ``max_piece`` bound the pieces
    (see :class:`~dqrxfer.pieces.PieceSizer`).  With ``block_checksums``
    (the server has the extension) every PATCH carries block checksums of
    ``hashed.algorithm`` instead (see :mod:`~dqrxfer.blocks`): a reset costs
    at most a block, so each PATCH carries the rest of the range, as far as
    one header's digests reach, and the sizer's rules do not apply.
    """

    tus: TusClient
    url: str
    payload: Payload
    hashed: Scan
    base: int
    length: int
    chunk_size: int
    max_piece: int | None
    retrier: Retrier
    tally: Tally
    stream: int = 0
    block_checksums: bool = False
    #: Block checksums computed ahead (see :class:`~dqrxfer.blocks.PreparedHeaders`).
    prepared: PreparedHeaders = field(default_factory=PreparedHeaders)

    def send(self, offset: int, until: int | None = None, hold: Hold | None = None) -> None:
        """Send from the upload's ``offset``, PATCH by PATCH, until the server
        has all the bytes (or, with ``until``, the upload's first ``until``).
        With ``hold`` (an offset of the upload and a wait), the bytes from
        that offset on go only once the wait has returned (in the same PATCH
        as those before them)."""
        until = self.length if until is None else until
        link = self.tus.link
        blocks = self.hashed.algorithm if self.block_checksums else None
        sizer = PieceSizer.for_range(
            self.chunk_size, self.max_piece, self.hashed.algorithm, offset, self.length, link
        )
        checksum_failures = 0
        while offset < until:
            start = self.base + offset
            header = block_header = None
            if blocks is not None:
                end = min(self.base + until, start + self._block_piece(blocks, sizer))
                block_header = self.prepared.get(self.payload, blocks, start, end)
            else:
                end, header = self._checksum_header(
                    start, sizer.piece_end(start, self.base + until)
                )
            log.debug(
                "%s: PATCH %d bytes at offset %d%s",
                self.payload.filename,
                end - start,
                offset,
                link.describe(),
            )
            body = self._body(start, end, hold, blocks)
            began = time.monotonic()
            try:
                response = self.tus.patch(self.url, offset, body, header, block_header)
                moved = new_offset(response)
                if not offset < moved <= self.length:
                    raise TransientError(f"the server moved from offset {offset} to {moved}")
            except TransientError as error:
                if getattr(error, "status", None) == 460:
                    checksum_failures += 1
                    if checksum_failures >= MAX_CHECKSUM_FAILURES:
                        raise RefusedError(
                            460,
                            f"the server rejected the checksum of {self.payload.filename} "
                            f"at offset {start} {checksum_failures} times: {error}",
                        ) from None
                sizer.failed()
                moved = self._recover(error, offset)
                if moved > offset:  # the server kept verified blocks: a new start
                    checksum_failures = 0
                offset = moved
                continue
            checksum_failures = 0
            if moved < self.length:  # the last PATCH's answer waits for publishing
                link.saw_piece(moved - offset, time.monotonic() - began)
            sizer.succeeded(moved - offset)
            offset = moved
            self.retrier.progress()
            self.tally.acknowledge(self.stream, offset)

    def _block_piece(self, algorithm: str, sizer: PieceSizer) -> int:
        """The bytes of the next block-checksummed PATCH: as many as one
        header's digests cover; but right after a failure on a short link
        (or one not measured yet), the sizer's small ramp: there the server
        may not have seen the cut connection yet when it answers HEAD, and a
        large PATCH from a stale offset would push megabytes into the buffers
        before its 409 (or 423) comes back.  On a long link the server has
        long seen it, and a round trip costs more than a probe saves."""
        round_trip = self.tus.link.round_trip
        if sizer.ramp is not None and (round_trip is None or round_trip < LONG_ROUND_TRIP):
            return sizer.ramp
        return block_max_piece(algorithm)

    def _body(self, start: int, end: int, hold: Hold | None, blocks: str | None) -> SliceBody:
        """The PATCH body of ``[start, end)``; bytes from the ``hold`` on
        wait, from the start of their block with block checksums (so that
        the server has verified every byte before those that wait)."""
        on_send = self.tally.sending(self.stream)
        if hold is None or not start <= self.base + hold.offset < end:
            return SliceBody(self.payload, start, end, on_send)
        gate = self.base + hold.offset
        if blocks is not None:
            size = block_size(blocks, end - start)
            gate = start + (gate - start) // size * size
        return GatedBody(self.payload, start, end, gate, hold.wait, on_send)

    def _recover(self, error: TransientError, offset: int) -> int:
        """After a failed PATCH from ``offset``: wait (or give up), then the
        offset the server has (progress if it moved)."""
        if not isinstance(error, OffsetConflict):
            self.payload.check_unchanged()
        self.retrier.failed(error)
        self.tally.acknowledge(self.stream, offset)
        moved = server_offset(self.tus, self.url, self.retrier)
        if moved > offset:
            self.retrier.progress()
        self.tally.acknowledge(self.stream, moved)
        return moved

    def _checksum_header(self, start: int, end: int) -> tuple[int, str | None]:
        return checksum_header(self.payload, self.hashed, start, end)


def checksum_header(payload: Payload, hashed: Scan, start: int, end: int) -> tuple[int, str | None]:
    """Where a piece of ``payload`` from ``start`` ends (``end`` or before it)
    and its Upload-Checksum: from the chunk digests of the grid if they are
    known (a piece of several chunks ends where they stop being known), else
    computed here for at most one chunk (pieces off the grid after a
    failure, or a digest the hashing thread is still far from).  A CRC-32
    piece that starts off the grid computes only its bytes up to the grid's
    next line here and goes on with the known digests of the whole chunks
    after it (combined), so that it need not end there."""
    if not hashed.algorithm:
        return end, None
    span = hashed.span_digest(start, end)
    if span is not None:
        end, digest = span
        return end, tus_checksum(hashed.algorithm, digest)
    line = min(end, (start // hashed.chunk_size + 1) * hashed.chunk_size)
    digest = checksum_range(payload, hashed.algorithm, start, line)
    rest = hashed.span_digest(line, end) if hashed.algorithm == "crc32" else None
    if rest is None:
        return line, tus_checksum(hashed.algorithm, digest)
    stop, following = rest
    value = crc32_combine(
        int.from_bytes(digest, "big"), int.from_bytes(following, "big"), stop - line
    )
    return stop, tus_checksum(hashed.algorithm, value.to_bytes(4, "big"))


def piece_checksums(
    payload: Payload, hashed: Scan, start: int, end: int, blocks: bool
) -> tuple[int, str | None, str | None]:
    """Where a piece from ``start`` towards ``end`` ends, its Upload-Checksum
    and its Upload-Block-Checksum (``blocks``: block checksums of
    ``hashed.algorithm`` instead of a chunk checksum)."""
    if blocks and hashed.algorithm:
        return end, None, block_checksum(payload, hashed.algorithm, start, end)
    stop, header = checksum_header(payload, hashed, start, end)
    return stop, header, None
