"""Block checksums, an extension of ours (``block-checksum`` in ``Tus-Extension``).

``Upload-Block-Checksum: <algorithm> <block size> <base64 digests>`` on a PATCH
(or a POST with a body) gives the digest of every ``<block size>`` bytes of the
body, the last block being the rest; ``<base64 digests>`` is the digests'
bytes one after the other (4 per CRC-32 block), base64-encoded.  The server
verifies each block as it arrives and writes only verified blocks: when the
body is cut, every whole block received stays (the offset ends on a block
boundary of the request), and a block whose digest does not match ends the
request with 460, the blocks before it kept (``Upload-Offset`` in the answer).

Why: ``Upload-Checksum`` covers a whole request, so a checksummed request cut
by a reset loses all it carried (the server cannot verify part of it).  A
client must then send small requests where connections drop, and on a long
link every request costs a round trip.  With block checksums a cut costs at
most one block, whatever the request's size, so a client can send the rest of
an upload in one request and still have every byte checked.

The digests are the ones of the checksum extension (``Tus-Checksum-Algorithm``,
each the big-endian bytes of the value, see :mod:`.checksum`).  A block is held
in memory until it is verified: the block size is bounded
(:data:`MIN_BLOCK_SIZE`-:data:`MAX_BLOCK_SIZE`), and so is the number of
blocks (:data:`MAX_BLOCKS`; the HTTP server's limit on a header line, 8 KiB
with gunicorn's and nginx's defaults, comes first for most algorithms).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from . import errors
from .body import BodyGone
from .checksum import ADVERTISED, ALGORITHMS, DIGEST_SIZES

HEADER = "Upload-Block-Checksum"
EXTENSION = "block-checksum"
MIN_BLOCK_SIZE = 64 * 1024
MAX_BLOCK_SIZE = 16 * 1024 * 1024
MAX_BLOCKS = 4096

Reader = Callable[[int], Any]


class BlockMismatch(Exception):
    """A block's digest did not match.  Not a :class:`~.errors.TusError`: the
    store keeps what was written before it (the verified blocks) as it does
    for a body cut short."""

    def __init__(self, index: int, algorithm: str) -> None:
        super().__init__(f"block {index} does not match its {algorithm} digest")
        self.index = index
        self.algorithm = algorithm


class BlockChecksums:
    """The expected digest of each block of one request's body."""

    def __init__(self, algorithm: str, block_size: int, digests: list[bytes]) -> None:
        self.algorithm = algorithm
        self.block_size = block_size
        self.digests = digests

    def wrap(self, read: Reader, length: int) -> Reader:
        """A reader over the ``length`` bytes of the body ``read`` yields that
        returns only verified blocks (raises :class:`BlockMismatch`)."""
        return _VerifiedReader(self, read, length).read


class _VerifiedReader:
    def __init__(self, checks: BlockChecksums, read: Reader, length: int) -> None:
        self.checks = checks
        self.raw = read
        self.length = length
        self.index = 0  # the next block to receive
        self.buffer = bytearray(min(checks.block_size, max(length, 1)))
        self.ready = memoryview(b"")  # verified bytes not yet handed out

    def read(self, size: int) -> bytes | memoryview:
        if not self.ready:
            if self.index == len(self.checks.digests):
                rest: bytes | memoryview = self.raw(size)  # the body's end (empty), or its excess
                return rest
            self.ready = self._next_block()
        block, self.ready = self.ready[:size], self.ready[size:]
        return block

    def _next_block(self) -> memoryview:
        checks = self.checks
        start = self.index * checks.block_size
        wanted = min(checks.block_size, self.length - start)
        view = memoryview(self.buffer)[:wanted]
        filled = 0
        while filled < wanted:
            piece = self.raw(wanted - filled)
            if not piece:
                raise BodyGone("the body ended early")
            view[filled : filled + len(piece)] = piece
            filled += len(piece)
        hasher = ALGORITHMS[checks.algorithm]()
        hasher.update(view)
        if hasher.digest() != checks.digests[self.index]:
            raise BlockMismatch(self.index, checks.algorithm)
        self.index += 1
        return view


def parse_block_checksums(header: str | None, length: int | None) -> BlockChecksums | None:
    """Parse ``Upload-Block-Checksum`` for a body of ``length`` bytes (its
    ``Content-Length``); 400 naming the rule it breaks if it is unusable."""
    if header is None:
        return None
    parts = header.strip().split(" ")
    if len(parts) != 3:
        raise errors.bad_header(HEADER, "must be '<algorithm> <block size> <base64 digests>'")
    name, size_text, encoded = parts
    algorithm = name.lower()
    if algorithm not in ALGORITHMS:
        raise errors.bad_header(
            HEADER, f"unsupported algorithm {name[:20]!r} (supported: {ADVERTISED})"
        )
    if not size_text.isascii() or not size_text.isdigit() or len(size_text) > 10:
        raise errors.bad_header(HEADER, f"block size {size_text[:20]!r} is not a number")
    block_size = int(size_text)
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise errors.bad_header(
            HEADER,
            f"block size {block_size} is outside {MIN_BLOCK_SIZE}-{MAX_BLOCK_SIZE} bytes",
        )
    if length is None or length <= 0:
        raise errors.bad_header(HEADER, "needs a body with a Content-Length")
    count = -(-length // block_size)
    if count > MAX_BLOCKS:
        raise errors.bad_header(
            HEADER, f"{count} blocks of {block_size} bytes are more than {MAX_BLOCKS}"
        )
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise errors.bad_header(HEADER, "digests are not valid base64") from None
    size = DIGEST_SIZES[algorithm]
    if len(raw) != count * size:
        raise errors.bad_header(
            HEADER,
            f"a body of {length} bytes in blocks of {block_size} needs {count} {algorithm} "
            f"digests ({count * size} bytes), not {len(raw)} bytes",
        )
    digests = [raw[index : index + size] for index in range(0, len(raw), size)]
    return BlockChecksums(algorithm, block_size, digests)
