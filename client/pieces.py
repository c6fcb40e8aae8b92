"""How many bytes each PATCH carries, and how a payload is split into parts.

The one place that decides the size of a request: :class:`PieceSizer` (one per
range sent, fed with every success and failure) and :func:`split_ranges` (the
partial uploads of a parallel upload, of equal bytes).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

#: The smallest PATCH body the client sends (but for a payload's last bytes).
MIN_PIECE = 256 * 1024
#: Before the link has failed once, a checksummed piece may be as large as
#: this share of the upload (as well as 1/8 of what got through): a first cut
#: then costs at most 1/64 of the payload, and a large payload on a clean link
#: starts with whole chunks instead of 256 KiB pieces (1 GiB: 32 PATCHes, not 72).
FIRST_CUT_SHARE = 64
#: On a known link a piece lasts at least this many round trips: the round
#: trip each PATCH waits for its answer is then at most ~3 % of its time.
ROUND_TRIPS = 32
#: With checksums, a piece on a long link carries at most this share of the
#: bytes expected between two resets (the upload's length before the first):
#: a cut piece is sent again whole (its checksum cannot be checked), so a
#: reset costs at most an eighth of that stretch, a sixteenth on average.
LINK_CUT_SHARE = 8
#: A link whose round trip is shorter than this (seconds: a local network,
#: loopback) is not sized by time: a round trip costs next to nothing there,
#: and the rules for an unknown link keep the bytes a cut costs small.  The
#: sites are 50 ms or more from the central server; 30 ms keeps a loopback or
#: a LAN whose answers are slowed by a busy server (seen above 10 ms) out.
LONG_ROUND_TRIP = 0.03
#: How large a piece sized by the link may be (when pieces may grow at all:
#: ``max_piece`` above the chunk size): at 300 ms and 20 MB/s, 32 round trips
#: carry 190 MB.
LINK_MAX_PIECE = 256 * 1024 * 1024


@dataclass
class LinkEstimate:
    """What the link to the server does, learnt from the requests sent: the
    round trip (the quickest answer to a request without a body) and the
    rate (bytes of a PATCH over its time less one round trip).

    One per connection (:class:`~dqrxfer.transport.TusClient`), shared by the
    senders that use it, so that what one range learnt serves the next.  The
    other connections of an upload to the same server (parallel streams, the
    final upload's creation) cross the same link: their estimates tell the
    first one of every answer (``same_link``), so that the round trip the
    upload keeps is the quickest of all its answers.  An answer's time also
    counts the time both ends took to get to it (a busy server, or a busy
    client's own hashing threads), which the link does not cost: the more
    answers the minimum is taken over, the closer it comes to the link's.
    """

    round_trip: float | None = None
    rate: float | None = None
    #: The estimate of the upload's first connection, when this is another's.
    same_link: LinkEstimate | None = field(default=None, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def on_same_link(self) -> LinkEstimate:
        """An estimate for another connection to the same server: it starts
        from the round trip known here, and tells this one of its answers
        (its rate is its own: each connection may be capped on its own)."""
        return LinkEstimate(round_trip=self.round_trip, same_link=self)

    def saw_answer(self, seconds: float) -> None:
        """A request without a body was answered in ``seconds``."""
        if seconds <= 0:
            return
        with self._lock:  # connections of one upload answer in threads of their own
            if self.round_trip is None or seconds < self.round_trip:
                self.round_trip = seconds
        if self.same_link is not None:
            self.same_link.saw_answer(seconds)

    def saw_piece(self, count: int, seconds: float) -> None:
        """A PATCH of ``count`` bytes was answered ``seconds`` after it began."""
        if count <= 0 or seconds <= 0:
            return
        round_trip = self.round_trip or 0.0
        # Never credit more than half the time to the round trip: a round
        # trip measured too long must not make the rate look unbounded.
        sample = count / max(seconds - round_trip, seconds / 2)
        if self.rate is None:
            self.rate = sample
        elif seconds >= 2 * round_trip:  # mostly transfer: a telling sample
            self.rate = (self.rate + sample) / 2

    def describe(self) -> str:
        """What is known of the link, for the debug log (empty: nothing yet)."""
        known = []
        if self.round_trip:
            known.append(f"round trip {self.round_trip * 1000:.1f} ms")
        if self.rate:
            known.append(f"rate {self.rate / 1e6:.2f} MB/s")
        return f" (link: {', '.join(known)})" if known else ""

    def piece_for(self, round_trips: int) -> float | None:
        """Bytes the link carries in ``round_trips`` round trips (None: not
        known yet, or not a long link)."""
        if not self.round_trip or not self.rate or self.round_trip < LONG_ROUND_TRIP:
            return None
        return self.rate * self.round_trip * round_trips


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
    * On a long link (a round trip of :data:`LONG_ROUND_TRIP` or more) whose
      round trip and rate are known (``link``), a piece is at
      least as large as what the link carries in :data:`ROUND_TRIPS` round
      trips (at most :data:`LINK_MAX_PIECE`, or ``max_piece`` when pieces may
      not grow), whatever the rules above say: on a long link the round trip
      each PATCH waits for its answer, not the bytes, is what costs.  With
      checksums a reset costs the cut piece, so that floor is lowered to the
      piece size that costs least in all, round trips and the cut piece sent
      again, ``sqrt(2 x D x rate x round trip)``, and to ``D /``
      :data:`LINK_CUT_SHARE`, where D is the typical stretch between
      failures (before the first one: the upload's length, as if one reset
      were to come).  That floor is rounded to the nearest whole number of
      chunks.  The first PATCH after a failure keeps the small ramp (a probe,
      should the server's offset be stale).
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
        link: LinkEstimate | None = None,
    ) -> None:
        self.chunk_size = chunk_size
        self.link = link
        self.length = length
        self.first_cut = max(MIN_PIECE, length // FIRST_CUT_SHARE)
        self.max_piece = max(chunk_size, max_piece or chunk_size)
        self.limit = chunk_size
        self.adaptive = adaptive
        self.ramp: int | None = MIN_PIECE if resuming else None
        self.distance: float | None = None  # bytes between failures, smoothed
        self.run = 0  # bytes acknowledged since the last failure
        self.link_max = LINK_MAX_PIECE if self.max_piece > chunk_size else self.max_piece
        self.probing = resuming  # the next PATCH is the first after a failure

    @classmethod
    def for_range(
        cls,
        chunk_size: int,
        max_piece: int | None,
        algorithm: str | None,
        offset: int,
        length: int,
        link: LinkEstimate | None = None,
    ) -> PieceSizer:
        """The sizer for an upload of ``length`` bytes sent from ``offset``
        with chunk checksums of ``algorithm`` (None: none), over ``link``.
        Only CRC-32 digests combine, so with another algorithm a piece stays
        one chunk."""
        return cls(
            chunk_size,
            algorithm is not None,
            # Resuming: the server may still be writing what the last run sent.
            resuming=offset > 0,
            max_piece=max_piece if algorithm in (None, "crc32") else None,
            length=length,
            link=link,
        )

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
        return max(min(sizes), self.link_floor())

    def link_floor(self) -> int:
        """The smallest piece worth its round trip on the link (0: none known,
        or the probe after a failure)."""
        carried = self.link.piece_for(ROUND_TRIPS) if self.link is not None else None
        if carried is None or self.probing:
            return 0
        if self.adaptive:
            assert self.link is not None and self.link.rate and self.link.round_trip
            in_flight = self.link.rate * self.link.round_trip
            stretch = self.length if self.distance is None else max(self.distance, self.run)
            carried = min(carried, math.sqrt(2 * stretch * in_flight), stretch / LINK_CUT_SHARE)
        floor = int(min(carried, self.link_max))
        # Pieces end on the chunk grid (see piece_end): the nearest whole
        # number of chunks, rather than the whole chunks below the floor.
        chunks = round(floor / self.chunk_size)
        return min(chunks * self.chunk_size, self.link_max) if chunks else floor

    def piece_end(self, start: int, stop: int) -> int:
        """Where the next PATCH from ``start`` ends (``stop`` at the latest):
        at the next line of the chunk grid, or, from a line, after as many
        whole chunks as :meth:`next` allows (from off the grid: up to the
        grid's next line, then whole chunks)."""
        chunk = self.chunk_size
        line = (start // chunk + 1) * chunk  # the next line of the chunk grid
        limit = start + self.next()
        if limit > line:
            line = limit // chunk * chunk  # several whole chunks
        return min(stop, line, limit)

    def succeeded(self, count: int) -> None:
        self.probing = False
        self.run += count
        if self.ramp is not None:
            self.ramp = None if self.ramp * 2 >= self.chunk_size else self.ramp * 2
        elif count >= self.limit:
            self.limit = min(self.max_piece, self.limit * 2)

    def failed(self) -> None:
        self.probing = True
        self.ramp = MIN_PIECE
        self.limit = self.chunk_size
        run = float(self.run)
        self.distance = run if self.distance is None else (self.distance + run) / 2
        self.run = 0


#: The boundaries of a parallel upload's parts are multiples of this many
#: bytes (a multiple of the block checksums' alignment): the parts are equal
#: to within this, so that no stream is left to finish alone.
SPLIT_ALIGN = 256 * 1024


def split_ranges(size: int, parts: int, align: int = SPLIT_ALIGN) -> list[tuple[int, int]]:
    """Split ``[0, size)`` into at most ``parts`` ranges of about equal bytes
    whose boundaries are multiples of ``align`` (no range is empty).

    Equal bytes, not equal chunks: on 8 MiB chunks four streams of 100 MiB
    got 24, 24, 24 and 28 MiB, and the last one ran alone for a sixth of
    the transfer.  A piece that starts off the chunk grid is checksummed as
    any other (see :meth:`~dqrxfer.sender.RangeSender._checksum_header`)."""
    units = -(-size // align)
    parts = max(1, min(parts, units))
    bounds = [units * index // parts * align for index in range(parts)]
    return list(zip(bounds, [*bounds[1:], size], strict=True))
