"""Block checksums, the client's side (the server's ``block-checksum`` extension).

A PATCH with ``Upload-Block-Checksum: <algorithm> <block size> <base64
digests>`` has every :data:`BLOCK_SIZE` bytes of its body checked by the
server as they arrive; a reset keeps every whole block received (see the
server's ``tus.blocks`` and ``docs/tus.md``).  A cut then costs at most one
block, whatever the request's size, so the client sends the rest of an upload
in few large requests, each costing one round trip, with every byte checked.

The digests are computed here, from the payload, just before the request: a
CRC-32 of a file in the page cache costs about 0.3 s per GiB of one core here,
small beside the time the bytes take on a link.
"""

from __future__ import annotations

import base64

from .payload import Payload, new_hasher

HEADER = "Upload-Block-Checksum"
EXTENSION = "block-checksum"
#: Bytes per checked block: what a reset costs at most (half on average).
BLOCK_SIZE = 1024 * 1024
#: The digests' bytes in one header, at most (base64 makes them 4/3 as many
#: characters): 4 KiB of header, half of the 8 KiB a header line may have
#: behind gunicorn's or nginx's defaults.  CRC-32: 768 blocks, 768 MiB.
MAX_DIGEST_BYTES = 3072
DIGEST_SIZES = {"crc32": 4, "md5": 16, "sha1": 20, "sha256": 32}


def max_piece(algorithm: str) -> int:
    """The most bytes one block-checksummed PATCH carries with ``algorithm``."""
    return max(1, MAX_DIGEST_BYTES // DIGEST_SIZES[algorithm]) * BLOCK_SIZE


def block_checksum(payload: Payload, algorithm: str, start: int, end: int) -> str:
    """The ``Upload-Block-Checksum`` value for the payload's bytes ``[start, end)``."""
    digests = bytearray()
    hasher = new_hasher(algorithm)
    filled = 0
    for block in payload.blocks(start, end):
        view = memoryview(block)
        while view:
            take = min(len(view), BLOCK_SIZE - filled)
            hasher.update(view[:take])
            filled += take
            view = view[take:]
            if filled == BLOCK_SIZE:
                digests += hasher.digest()
                hasher = new_hasher(algorithm)
                filled = 0
    if filled:
        digests += hasher.digest()
    return f"{algorithm} {BLOCK_SIZE} {base64.b64encode(digests).decode('ascii')}"
