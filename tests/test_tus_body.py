"""The receive buffer of a request body read from gunicorn's socket
(server/tus/body.py): small for a slow body, larger only for a fast one; a
silent body asks whether another request wants its upload."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

from dqrxfer.server.tus.body import (
    FIRST_RECV_BUFFER,
    RECV_BUFFER,
    RELEASE_POLL,
    BodyGone,
    BodyReleased,
    body_reader,
)

KiB = 1024


@contextmanager
def gunicorn_body(length: int) -> Iterator[tuple[dict[str, Any], socket.socket]]:
    """A WSGI environ whose body is gunicorn's reader of ``length`` bytes on
    one end of a socket pair; the other end is the client's."""
    server, client = socket.socketpair()
    try:
        body = Body(LengthReader(SocketUnreader(server), length))
        yield {"wsgi.input": body, "gunicorn.socket": server}, client
    finally:
        server.close()
        client.close()


def read_all(read: Any) -> tuple[bytes, list[int]]:
    received, sizes = bytearray(), []
    while block := read(4 * 1024 * KiB):
        received += block
        sizes.append(len(block))
    return bytes(received), sizes


def test_a_slow_body_is_read_into_the_first_small_buffer() -> None:
    pieces = [os.urandom(KiB) for _ in range(100)]  # 100 KiB in all, 1 KiB at a time
    length = sum(len(piece) for piece in pieces)
    with gunicorn_body(length) as (environ, client):

        def trickle() -> None:
            for piece in pieces:
                client.sendall(piece)

        with body_reader(environ, length, timeout=30) as read:
            sender = threading.Thread(target=trickle)
            sender.start()
            received, sizes = read_all(read)
            sender.join()
        assert received == b"".join(pieces)
        assert max(sizes) <= FIRST_RECV_BUFFER
        assert len(read.__self__.buffer) == FIRST_RECV_BUFFER


def test_a_read_that_fills_the_buffer_makes_the_next_one_four_times_larger() -> None:
    payload = os.urandom(8 * RECV_BUFFER)
    ahead = payload[: 2 * FIRST_RECV_BUFFER]
    length = len(ahead) + len(payload)
    with gunicorn_body(length) as (environ, client):
        sender = threading.Thread(target=client.sendall, args=(payload,))
        # Waiting in the socket before the first read: that read fills the
        # first buffer, so the next one may return more.
        client.sendall(ahead)
        with body_reader(environ, length, timeout=30) as read:
            first = bytes(read(4 * 1024 * KiB))
            assert len(first) == FIRST_RECV_BUFFER
            assert len(read.__self__.buffer) == 4 * FIRST_RECV_BUFFER
            sender.start()
            rest, sizes = read_all(read)
            sender.join()
        assert first + rest == ahead + payload
        assert max(sizes) <= RECV_BUFFER


def test_a_silent_body_asks_whether_it_is_wanted_and_ends_when_it_is() -> None:
    sent = os.urandom(10 * KiB)
    asked: list[float] = []
    with gunicorn_body(len(sent) + KiB) as (environ, client):
        client.sendall(sent)  # then silence, the socket open

        def released() -> bool:
            asked.append(time.monotonic())
            return len(asked) == 2

        with body_reader(environ, len(sent) + KiB, timeout=30, released=released) as read:
            received = bytes(read(64 * KiB))
            started = time.monotonic()
            with pytest.raises(BodyReleased):
                read(64 * KiB)
            ended = time.monotonic()
        assert received == sent
        assert environ["wsgi.input"].failed  # gunicorn closes the connection
    # asked after each slice of silence, not before the first
    assert asked[0] - started >= RELEASE_POLL * 0.9
    assert ended - started < 30


def test_a_silent_body_nobody_wants_ends_after_the_read_timeout() -> None:
    asked: list[int] = []

    def released() -> bool:
        asked.append(1)
        return False

    with (
        gunicorn_body(KiB) as (environ, _),
        body_reader(environ, KiB, timeout=1.2, released=released) as read,
    ):
        started = time.monotonic()
        with pytest.raises(BodyGone) as gone:
            read(KiB)
        waited = time.monotonic() - started
    assert not isinstance(gone.value, BodyReleased)
    assert "timed out" in str(gone.value)
    assert 1.2 * 0.9 <= waited < 10
    assert len(asked) >= 2


def test_a_body_read_by_the_wsgi_server_keeps_its_read_timeout() -> None:
    """Not the socket path (here a plain stream): no slices, nothing asked."""
    server, client = socket.socketpair()
    try:
        environ = {"wsgi.input": io.BytesIO(b"abc"), "gunicorn.socket": server}
        with body_reader(environ, 3, timeout=30, released=lambda: True) as read:
            assert server.gettimeout() == 30
            assert read(10) == b"abc"
    finally:
        server.close()
        client.close()
