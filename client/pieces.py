"""How many bytes each PATCH carries, and how a payload is split into parts.

The one place that decides the size of a request: :class:`PieceSizer` (one per
range sent, fed with every success and failure) and :func:`split_ranges` (the
partial uploads of a parallel upload, on the chunk grid).
"""

from __future__ import annotations

#: The smallest PATCH body the client sends (but for a payload's last bytes).
MIN_PIECE = 256 * 1024
#: Before the link has failed once, a checksummed piece may be as large as
#: this share of the upload (as well as 1/8 of what got through): a first cut
#: then costs at most 1/64 of the payload, and a large payload on a clean link
#: starts with whole chunks instead of 256 KiB pieces (1 GiB: 32 PATCHes, not 72).
FIRST_CUT_SHARE = 64


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

    @classmethod
    def for_range(
        cls, chunk_size: int, max_piece: int | None, algorithm: str | None, offset: int, length: int
    ) -> PieceSizer:
        """The sizer for an upload of ``length`` bytes sent from ``offset``
        with chunk checksums of ``algorithm`` (None: none).  Only CRC-32
        digests combine, so with another algorithm a piece stays one chunk."""
        return cls(
            chunk_size,
            algorithm is not None,
            # Resuming: the server may still be writing what the last run sent.
            resuming=offset > 0,
            max_piece=max_piece if algorithm in (None, "crc32") else None,
            length=length,
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
        return min(sizes)

    def piece_end(self, start: int, stop: int) -> int:
        """Where the next PATCH from ``start`` ends (``stop`` at the latest):
        at the next line of the chunk grid, or, from a line, after as many
        whole chunks as :meth:`next` allows."""
        chunk = self.chunk_size
        line = (start // chunk + 1) * chunk  # the next line of the chunk grid
        limit = start + self.next()
        if start % chunk == 0 and limit > line:
            line = limit // chunk * chunk  # several whole chunks
        return min(stop, line, limit)

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
