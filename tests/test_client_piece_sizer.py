"""How large each PATCH is: the rules of :class:`dqrxfer.upload.PieceSizer`.

The live behaviour (pieces on the chunk grid, checksums combined) is in
test_client_pieces.py; these are the sizing rules themselves, which decide how
much a cut can cost and how many round trips a clean link pays.
"""

from __future__ import annotations

import math

import pytest

from dqrxfer.pieces import LINK_CUT_SHARE, LINK_MAX_PIECE, ROUND_TRIPS, LinkEstimate
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


MB = 1_000_000


def on_the_grid(size: float) -> int:
    """The nearest whole number of chunks (pieces sized by the link end on the grid)."""
    return round(size / CHUNK) * CHUNK or int(size)


def long_link_sizer(rate: float, round_trip: float = 0.08) -> PieceSizer:
    """A sizer for 1 GiB with CRC-32 checksums, as dqr-upload makes it by
    default, on a link of known round trip and rate."""
    link = LinkEstimate(round_trip=round_trip, rate=rate)
    return PieceSizer(
        CHUNK, adaptive=True, resuming=False, max_piece=64 * MiB, length=1024 * MiB, link=link
    )


@pytest.mark.parametrize("rate", [20 * MB, 50 * MB, 200 * MB])
def test_on_a_known_link_without_checksums_pieces_last_many_round_trips(rate: float) -> None:
    """80 ms: a piece carries what the link does in 32 round trips (the
    answer each PATCH waits for is ~3 % of its time), whatever the rules for
    an unknown link say (8 MiB here), and at most LINK_MAX_PIECE; it follows
    the link's rate."""
    link = LinkEstimate(round_trip=0.08, rate=rate)
    sizer = PieceSizer(
        CHUNK, adaptive=False, resuming=False, max_piece=64 * MiB, length=4096 * MiB, link=link
    )
    expected = on_the_grid(min(rate * 0.08 * ROUND_TRIPS, LINK_MAX_PIECE))
    assert sizer.next() == expected
    assert sizer.piece_end(0, 4096 * MiB) == expected


@pytest.mark.parametrize("rate", [20 * MB, 50 * MB])
@pytest.mark.parametrize("round_trip", [0.08, 0.3])
def test_with_checksums_pieces_weigh_round_trips_against_the_cut_piece(
    rate: float, round_trip: float
) -> None:
    """With CRC-32 checksums a cut piece is sent again whole: before any
    failure a piece is the size that costs least if one reset comes during
    the upload, sqrt(2 x length x bytes in flight), at most an eighth of the
    upload, and never smaller than the rules for an unknown link make it."""
    sizer = long_link_sizer(rate, round_trip)
    length = 1024 * MiB
    best = math.sqrt(2 * length * rate * round_trip)
    expected = min(rate * round_trip * ROUND_TRIPS, best, length / LINK_CUT_SHARE)
    assert sizer.next() == max(CHUNK, on_the_grid(expected))
    slower = long_link_sizer(rate / 2, round_trip)
    assert slower.next() < sizer.next()  # a slower link: smaller pieces


def test_from_off_the_grid_a_piece_goes_on_with_whole_chunks() -> None:
    sizer = long_link_sizer(20 * MB)
    start = MiB + 512 * 1024
    end = sizer.piece_end(start, 1024 * MiB)
    assert end % CHUNK == 0 and end - start > 40 * MB, end


@pytest.mark.parametrize(
    "link",
    [LinkEstimate(), LinkEstimate(round_trip=0.0005, rate=1000 * MB)],
    ids=["unknown", "lan"],
)
def test_without_a_known_long_link_the_sizes_are_as_before(link: LinkEstimate) -> None:
    """Not known yet, or a round trip that costs next to nothing (loopback):
    the rules for an unknown link, which keep what a cut costs small."""
    sizer = PieceSizer(
        CHUNK, adaptive=True, resuming=False, max_piece=64 * MiB, length=1024 * MiB, link=link
    )
    assert sizes_on_a_clean_link(sizer, 64 * MiB)[:2] == [CHUNK, 2 * CHUNK]


def test_after_a_failure_one_small_probe_then_the_size_that_costs_least() -> None:
    """After a cut: the small ramp's first piece (the server's offset may be
    stale), then pieces of sqrt(2 x bytes between failures x bytes in flight):
    fewer round trips against a smaller cut piece to send again."""
    rate, round_trip = 20 * MB, 0.08
    sizer = long_link_sizer(rate, round_trip)
    through = 0
    while through < 50 * MiB:
        size = sizer.next()
        sizer.succeeded(size)
        through += size
    sizer.failed()
    assert sizer.next() == MIN_PIECE
    sizer.succeeded(MIN_PIECE)
    best = min(math.sqrt(2 * through * rate * round_trip), through / LINK_CUT_SHARE)
    assert sizer.next() == on_the_grid(best)
    assert best < rate * round_trip * ROUND_TRIPS  # smaller than on a clean link


def test_resuming_starts_with_the_probe_too() -> None:
    link = LinkEstimate(round_trip=0.08, rate=20 * MB)
    sizer = PieceSizer(
        CHUNK, adaptive=True, resuming=True, max_piece=64 * MiB, length=1024 * MiB, link=link
    )
    assert sizer.next() == MIN_PIECE


def test_the_link_estimate_takes_the_quickest_answer_and_the_rate_beyond_the_round_trip() -> None:
    link = LinkEstimate()
    assert link.piece_for(ROUND_TRIPS) is None
    for seconds in (0.3, 0.1, 0.2):
        link.saw_answer(seconds)
    assert link.round_trip == 0.1
    link.saw_piece(4 * MB, 0.3)  # 0.1 s waiting, 0.2 s carrying 4 MB
    assert link.rate == pytest.approx(20 * MB)
    link.saw_piece(MIN_PIECE, 0.11)  # mostly waiting: it tells little of the rate
    assert link.rate == pytest.approx(20 * MB)
    link.saw_piece(10 * MB, 1.1)
    assert link.rate == pytest.approx(15 * MB)
    assert link.piece_for(ROUND_TRIPS) == pytest.approx(15 * MB * 0.1 * ROUND_TRIPS)


def test_the_connections_of_one_upload_keep_the_quickest_round_trip_of_them_all() -> None:
    """Parallel streams and the final upload's creation use connections of
    their own over the same link: every answer any of them gets counts for
    the upload's round trip (the quickest is the closest to the link's, on
    a busy machine), while each keeps the rate of its own connection."""
    first = LinkEstimate()
    first.saw_answer(0.09)
    other = first.on_same_link()
    assert other.round_trip == 0.09  # starts from what is known
    other.saw_answer(0.05)
    assert first.round_trip == other.round_trip == 0.05
    other.saw_answer(0.2)  # slower answers change nothing
    first.saw_answer(0.06)
    assert (first.round_trip, other.round_trip) == (0.05, 0.05)
    other.saw_piece(8 * MiB, 1.0)
    assert other.rate is not None and first.rate is None
