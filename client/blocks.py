"""Block checksums, the client's side (the server's ``block-checksum`` extension).

A PATCH with ``Upload-Block-Checksum: <algorithm> <block size> <base64
digests>`` has every block of its body (:func:`block_size`) checked by the
server as it arrives; a reset keeps every whole block received (see the
server's ``tus.blocks`` and ``docs/tus.md``).  A cut then costs at most one
block, whatever the request's size, so the client sends the rest of an upload
in few large requests, each costing one round trip, with every byte checked.

The digests are computed here, from the payload, just before the request: a
CRC-32 of a file in the page cache costs about 0.3 s per GiB of one core here,
small beside the time the bytes take on a link.
"""

from __future__ import annotations

import base64
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from .payload import GridDigests, Payload

HEADER = "Upload-Block-Checksum"
EXTENSION = "block-checksum"
#: The smallest block: what a reset costs at most (half of it on average)
#: when the request is small enough for blocks this small.
MIN_BLOCK = 256 * 1024
#: The largest block the client uses (the server takes up to 16 MiB).
MAX_BLOCK = 4 * 1024 * 1024
#: Block sizes are multiples of this.
BLOCK_ALIGN = 64 * 1024
#: The most bytes one PATCH carries (at 20 MB/s, 54 s: its round trip is lost
#: in it even at 300 ms).
MAX_PIECE = 1024 * 1024 * 1024
#: The digests' bytes in one header, at most (base64 makes them 4/3 as many
#: characters): 4 KiB of header, half of the 8 KiB a header line may have
#: behind gunicorn's or nginx's defaults.  CRC-32: 768 blocks.
MAX_DIGEST_BYTES = 3072
DIGEST_SIZES = {"crc32": 4, "md5": 16, "sha1": 20, "sha256": 32}


def max_blocks(algorithm: str) -> int:
    """How many digests of ``algorithm`` one header carries."""
    return max(1, MAX_DIGEST_BYTES // DIGEST_SIZES[algorithm])


def max_piece(algorithm: str) -> int:
    """The most bytes one block-checksummed PATCH carries with ``algorithm``."""
    return min(MAX_PIECE, max_blocks(algorithm) * MAX_BLOCK)


def block_size(algorithm: str, length: int) -> int:
    """The block size for a PATCH of ``length`` bytes: the smallest whose
    digests fit in one header (small blocks: a reset costs little), at
    least :data:`MIN_BLOCK`.  CRC-32: 256 KiB blocks up to 192 MiB, then
    larger (1 GiB: 1.375 MiB)."""
    per_block = -(-length // max_blocks(algorithm))
    aligned = -(-per_block // BLOCK_ALIGN) * BLOCK_ALIGN
    return min(MAX_BLOCK, max(MIN_BLOCK, aligned))


def block_checksum(payload: Payload, algorithm: str, start: int, end: int) -> str:
    """The ``Upload-Block-Checksum`` value for the payload's bytes ``[start, end)``
    (in blocks of :func:`block_size`)."""
    size = block_size(algorithm, end - start)
    digests = bytearray()
    grid = GridDigests(algorithm, size, digests.extend)
    for block in payload.blocks(start, end):
        grid.update(block)
    grid.finish()
    return f"{algorithm} {size} {base64.b64encode(digests).decode('ascii')}"


class PreparedHeaders:
    """Block checksums computed ahead, on a thread, for a request whose range
    is known before it can go: the first PATCH of a new upload, while its
    creation (a round trip) travels.  Its header needs the digests of the
    whole body before the first byte, which for 100 MiB is tens of
    milliseconds of CRC-32 that would otherwise come after the answer."""

    def __init__(self) -> None:
        self._ready: dict[tuple[int, int, str], Future[str]] = {}
        self._lock = threading.Lock()

    def prepare(self, payload: Payload, algorithm: str, start: int, end: int) -> None:
        """Start computing the header of ``[start, end)`` of ``payload``."""
        pool = ThreadPoolExecutor(1, thread_name_prefix="dqr-blocks")
        future = pool.submit(block_checksum, payload, algorithm, start, end)
        pool.shutdown(wait=False)
        with self._lock:
            self._ready[(start, end, algorithm)] = future

    def get(self, payload: Payload, algorithm: str, start: int, end: int) -> str:
        """The header of ``[start, end)``: the one prepared (once), else computed now."""
        with self._lock:
            future = self._ready.pop((start, end, algorithm), None)
        if future is not None:
            return future.result()
        return block_checksum(payload, algorithm, start, end)
