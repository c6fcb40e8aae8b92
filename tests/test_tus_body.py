"""The receive buffers of a request body read from gunicorn's socket
(server/tus/body.py): small for a slow body, larger only for a fast one, a
block unchanged until the second read after it; a silent body asks whether
another request wants its upload."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
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
    StableBuffer,
    body_reader,
)
from dqrxfer.server.tus.store import FileStore, UploadInfo

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
            assert read.__self__.buffer_size == FIRST_RECV_BUFFER
        assert received == b"".join(pieces)
        assert max(sizes) <= FIRST_RECV_BUFFER


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
            assert read.__self__.buffer_size == 4 * FIRST_RECV_BUFFER
            sender.start()
            rest, sizes = read_all(read)
            sender.join()
        assert first + rest == ahead + payload
        assert max(sizes) <= RECV_BUFFER


def test_a_block_stays_unchanged_while_the_next_one_is_received() -> None:
    payload = os.urandom(6 * RECV_BUFFER)
    with gunicorn_body(len(payload)) as (environ, client):
        sender = threading.Thread(target=client.sendall, args=(payload,))
        sender.start()
        with body_reader(environ, len(payload), timeout=30) as read:
            received = bytearray()
            previous: tuple[memoryview, bytes] | None = None
            while block := read(4 * 1024 * KiB):
                assert isinstance(block, memoryview) and isinstance(block.obj, StableBuffer)
                if previous is not None:
                    # The block before, after this one was received into the other buffer.
                    assert bytes(previous[0]) == previous[1]
                previous = (block, bytes(block))
                received += block
        sender.join()
    assert bytes(received) == payload


def test_the_running_sha256_of_patch_after_patch_through_the_socket_reader(
    tmp_path: Path,
) -> None:
    """Each PATCH's last block may still be hashing when the next PATCH
    starts: its buffer must not serve that PATCH's body meanwhile."""
    store = FileStore(tmp_path, running_sha256=True)
    payload = os.urandom(12 * RECV_BUFFER + 3)
    info = store.create(UploadInfo(id="", length=len(payload)))
    offset = 0
    for size in [2 * RECV_BUFFER + 1, RECV_BUFFER, 7, 3 * RECV_BUFFER, 6 * RECV_BUFFER - 5]:
        chunk = payload[offset : offset + size]
        with gunicorn_body(len(chunk)) as (environ, client):
            sender = threading.Thread(target=client.sendall, args=(chunk,))
            sender.start()
            with body_reader(environ, len(chunk), timeout=30) as read:
                offset += store.write(info.id, offset, read, len(payload) - offset)
            sender.join()
    assert offset == len(payload)
    assert store.known_sha256(info.id) == hashlib.sha256(payload).hexdigest()


def read_body(payload: bytes) -> tuple[list[StableBuffer], memoryview]:
    """Read ``payload`` as a body through the socket reader: the buffers its
    last reads used, and its last block."""
    with gunicorn_body(len(payload)) as (environ, client):
        # Waiting in the socket before the first read: the first reads fill
        # their buffers, so the reader grows them to RECV_BUFFER.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * RECV_BUFFER)
        ahead = 3 * RECV_BUFFER // 2
        client.sendall(payload[:ahead])
        sender = threading.Thread(target=client.sendall, args=(payload[ahead:],))
        sender.start()
        with body_reader(environ, len(payload), timeout=30) as read:
            last = memoryview(b"")
            while block := read(4 * 1024 * KiB):
                last = block
            buffers = [buffer for buffer in read.__self__.buffers if buffer is not None]
        sender.join()
    return buffers, last


def test_a_buffer_still_being_hashed_serves_no_other_body() -> None:
    payload = os.urandom(4 * RECV_BUFFER)
    buffers, last = read_body(payload)
    assert all(len(buffer) == RECV_BUFFER for buffer in buffers)
    hashing: Future[None] = Future()
    assert isinstance(last.obj, StableBuffer)
    last.obj.hashing = hashing  # as the running SHA-256 marks the block it still reads
    busy = last.obj
    during, _ = read_body(payload)
    assert all(buffer is not busy for buffer in during)
    hashing.set_result(None)
    after, _ = read_body(payload)
    assert any(buffer is busy for buffer in after)  # kept, and used again once free


def test_a_small_body_that_arrives_in_one_read_makes_one_buffer() -> None:
    payload = os.urandom(FIRST_RECV_BUFFER)
    with gunicorn_body(len(payload)) as (environ, client):
        client.sendall(payload)
        with body_reader(environ, len(payload), timeout=30) as read:
            received, sizes = read_all(read)
            made = [buffer for buffer in read.__self__.buffers if buffer is not None]
    assert received == payload and sizes == [len(payload)]
    assert [len(buffer) for buffer in made] == [len(payload)]


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
