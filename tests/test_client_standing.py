"""What an interrupted command says of its uploads (dqrxfer.standing): the
server's offsets where it answered, at least the acknowledged bytes where it
did not.  The command's signal path is covered against a real server in
test_client_mistakes.py."""

from __future__ import annotations

from dqrxfer.progress import NullProgress
from dqrxfer.sender import Tally
from dqrxfer.standing import Standing

MiB = 1024 * 1024
A = "http://127.0.0.1:1/files/a"
B = "http://127.0.0.1:1/files/b"
C = "http://127.0.0.1:1/files/c"


def two_payloads() -> tuple[Standing, Tally]:
    """big.bin (two partial uploads of 10 MiB, 1 MiB acknowledged of the
    first) and small.bin (one upload of 2 MiB, all acknowledged)."""
    standing = Standing()
    progress = standing.tracking(NullProgress())
    standing.expect("big.bin", 20 * MiB)
    standing.expect("small.bin", 2 * MiB)
    big = Tally(progress.task("big.bin", 20 * MiB), [(A, 10 * MiB), (B, 10 * MiB)], [0, 0])
    big.acknowledge(0, 1 * MiB)
    small = Tally(progress.task("small.bin", 2 * MiB), [(C, 2 * MiB)], [0])
    small.acknowledge(0, 2 * MiB)
    return standing, big


def test_the_server_offsets_of_the_unfinished_uploads_count_where_it_answered() -> None:
    standing, _ = two_payloads()
    line = standing.summary({A: 7 * MiB, B: 3 * MiB})
    assert line == "12.0 MiB of 22.0 MiB on the server (1 of 2 uploads complete)"


def test_an_upload_the_server_did_not_answer_for_counts_its_acknowledged_bytes_at_least() -> None:
    standing, _ = two_payloads()
    assert standing.summary({B: 3 * MiB}) == (
        "at least 6.0 MiB of 22.0 MiB on the server (1 of 2 uploads complete)"
    )
    assert standing.summary() == (
        "at least 3.0 MiB of 22.0 MiB on the server (1 of 2 uploads complete)"
    )


def test_the_uploads_to_ask_about_are_the_unfinished_ones_and_none_without_sessions() -> None:
    standing, big = two_payloads()
    assert standing.ask_server(0.1) == {}  # no sessions to ask on: nothing asked
    big.acknowledge(0, 10 * MiB)
    big.acknowledge(1, 10 * MiB)
    assert standing.summary() == "22.0 MiB of 22.0 MiB on the server (2 of 2 uploads complete)"


def test_a_payload_started_over_counts_its_new_uploads_only() -> None:
    standing = Standing()
    progress = standing.tracking(NullProgress())
    first = Tally(progress.task("big.bin", 20 * MiB), [(A, 20 * MiB)], [0])
    first.acknowledge(0, 5 * MiB)
    Tally(progress.task("big.bin", 20 * MiB), [(B, 20 * MiB)], [0])  # the upload was gone
    assert standing.summary({B: 2 * MiB}) == "2.0 MiB of 20.0 MiB on the server"
