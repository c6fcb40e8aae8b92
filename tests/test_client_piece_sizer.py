"""How large each PATCH is: the rules of :class:`dqrxfer.upload.PieceSizer`.

The live behaviour (pieces on the chunk grid, checksums combined) is in
test_client_pieces.py; these are the sizing rules themselves, which decide how
much a cut can cost and how many round trips a clean link pays.
"""

from __future__ import annotations

import pytest
from dqrxfer.upload import FIRST_CUT_SHARE, MIN_PIECE, PieceSizer

MiB = 1024 * 1024
CHUNK = 8 * MiB


def sizes_on_a_clean_link(sizer: PieceSizer, length: int) -> list[int]:
    sent, sizes = 0, []
    while sent < length:
        size = min(sizer.next(), length - sent)
        sizes.append(size)
        sizer.succeeded(size)
        sent += size
    return sizes


@pytest.mark.parametrize("length", [64 * MiB, 1024 * MiB, 4096 * MiB])
def test_before_any_failure_a_cut_costs_at_most_a_share_of_the_payload_or_of_what_got_through(
    length: int,
) -> None:
    """With chunk checksums a cut piece is lost whole: before the link has
    failed once, no piece is larger than 1/64 of the upload or 1/8 of the bytes
    already through, whichever is larger (and never above the limits)."""
    sizer = PieceSizer(CHUNK, adaptive=True, resuming=False, max_piece=64 * MiB, length=length)
    sent = 0
    for size in sizes_on_a_clean_link(sizer, length):
        assert size <= max(MIN_PIECE, length // FIRST_CUT_SHARE, sent // 8)
        assert size <= 64 * MiB
        sent += size


def test_a_large_payload_starts_with_whole_chunks_and_needs_few_requests() -> None:
    """1 GiB on a clean link: the first piece is a whole chunk (it was 256 KiB,
    growing by 1/8 of what got through: 72 requests), and the whole payload
    goes in about 30 PATCHes."""
    length = 1024 * MiB
    sizer = PieceSizer(CHUNK, adaptive=True, resuming=False, max_piece=64 * MiB, length=length)
    sizes = sizes_on_a_clean_link(sizer, length)
    assert sizes[:2] == [CHUNK, 2 * CHUNK]
    assert max(sizes) == 64 * MiB
    assert len(sizes) <= 34, sizes


def test_a_small_payload_still_starts_small() -> None:
    """64 MiB: 1/64 is 1 MiB, so the first pieces stay small, as the flaky-link
    budget (10 % of wire overhead) needs."""
    length = 64 * MiB
    sizer = PieceSizer(CHUNK, adaptive=True, resuming=False, max_piece=64 * MiB, length=length)
    sizes = sizes_on_a_clean_link(sizer, length)
    assert sizes[0] == MiB
    assert max(sizes[:8]) <= 2 * MiB


def test_after_a_failure_pieces_follow_the_links_record_not_the_payload_size() -> None:
    """Once the link has failed, the share of the payload no longer applies:
    the next piece is the small ramp, and later pieces keep to 1/16 of the
    typical stretch between failures."""
    length = 4096 * MiB
    sizer = PieceSizer(CHUNK, adaptive=True, resuming=False, max_piece=64 * MiB, length=length)
    sizer.succeeded(sizer.next())
    sizer.failed()
    assert sizer.next() == MIN_PIECE
    for _ in range(200):  # a link that cuts every 4 MiB or so
        through = 0
        while through < 4 * MiB:
            size = sizer.next()
            assert size <= max(MIN_PIECE, 8 * MiB // PieceSizer.FRACTION), size
            sizer.succeeded(size)
            through += size
        sizer.failed()


def test_without_checksums_pieces_are_whole_chunks_from_the_start() -> None:
    sizer = PieceSizer(CHUNK, adaptive=False, resuming=False, max_piece=64 * MiB, length=64 * MiB)
    assert sizer.next() == CHUNK
