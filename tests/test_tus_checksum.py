"""The checksum extension's CRC-32 on its own: zlib's values, in pieces or at
once, computed by ISA-L where its wheels exist (the protocol tests drive it
through a live server)."""

from __future__ import annotations

import os
import zlib

from dqrxfer.server.tus import checksum
from support.isal import require_isal


def test_crc32_gives_zlib_s_value_whatever_the_pieces() -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)
    hasher = checksum.ALGORITHMS["crc32"]()
    for start, end in ((0, 5), (5, 1024 * 1024), (1024 * 1024, len(data))):
        hasher.update(data[start:end])
    assert hasher.digest() == zlib.crc32(data).to_bytes(4, "big")


def test_crc32_is_computed_by_isa_l_where_its_wheels_exist() -> None:
    require_isal()
    assert checksum.crc32.__module__.startswith("isal")
