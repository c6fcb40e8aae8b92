"""CRC-32 as zlib computes it, and the combination of two CRC-32s.

Per-chunk checksums of CRC-32 (``Upload-Checksum: crc32 ...``) are computed
once per chunk of the grid by the hashing pass; a PATCH of several whole
chunks carries their CRC-32s combined with :func:`crc32_combine`, without
reading the bytes again.
"""

from __future__ import annotations

import functools
import zlib

try:  # ISA-L's CRC-32 (carry-less multiplication): about three times zlib's speed
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - a platform without ISA-L wheels
    from zlib import crc32


class Crc32:
    """zlib's CRC-32 (computed by ISA-L where it is installed, the same values)
    behind the hashlib interface."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | memoryview) -> None:
        self.value = crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


def _gf2_times(matrix: tuple[int, ...], vector: int) -> int:
    """``matrix`` (32 columns of 32 bits, over GF(2)) times ``vector``."""
    total, index = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[index]
        vector >>= 1
        index += 1
    return total


@functools.lru_cache(maxsize=16)
def _crc32_shift(length: int) -> tuple[int, ...]:
    """The linear map that appending ``length`` zero bytes applies to a CRC-32.

    zlib's CRC-32 is affine in its start value: ``crc32(data, c) ^ crc32(data, 0)``
    depends on ``c`` alone, linearly.  For one zero byte its columns come from
    zlib itself; ``length`` bytes is that map to the ``length``-th power (by
    squaring: about 5 ms for 8 MiB, once per length).
    """
    step = tuple(zlib.crc32(b"\0", 1 << bit) ^ zlib.crc32(b"\0", 0) for bit in range(32))
    result = tuple(1 << bit for bit in range(32))  # the identity
    while length:
        if length & 1:
            result = tuple(_gf2_times(step, column) for column in result)
        step = tuple(_gf2_times(step, column) for column in step)
        length >>= 1
    return result


def crc32_combine(first: int, second: int, second_length: int) -> int:
    """The CRC-32 of ``a + b`` from ``crc32(a)``, ``crc32(b)`` and ``len(b)``, as
    zlib's C ``crc32_combine`` (which Python's zlib does not offer)."""
    return _gf2_times(_crc32_shift(second_length), first) ^ second
