"""Reading a request body as it arrives.

Upload bytes must reach the data file as soon as the server has them: if the
client then goes away (connection reset, or silent until ``read_timeout``),
nothing it sent is lost.  WSGI's ``wsgi.input.read(n)`` waits until it has
``n`` bytes, and what it gathered is lost when the connection fails midway, so
large reads would lose up to a block and small reads cost time per call.

Under gunicorn, for a body with a ``Content-Length`` (what tus clients send),
we therefore read from the connection's socket ourselves: first the bytes
gunicorn already read ahead, then ``recv_into`` a reused buffer, which returns
whatever has arrived (up to the buffer's size), with no copy in Python.
Reads alternate between two buffers (:class:`StableBuffer`), so a block stays
unchanged while the next one is received: the running SHA-256
(:mod:`.digest`) hashes it where it lies, on another thread, instead of a copy.
gunicorn's own reader is told how much of the body was consumed, so it keeps
the connection usable (or closes it after a failure).  Anywhere else (another
WSGI server, chunked bodies) bodies are read with ``read()`` in small blocks.

A body whose connection falls silent may be taken over: with ``released``
given, the socket path waits for data in :data:`RELEASE_POLL` slices (the
same ``recv_into`` calls while data flows: nothing is added to them) and
after each silent slice asks ``released()``; if another request is waiting
for the upload's lock and asked for it (:mod:`.locker`), the read ends with
:class:`BodyReleased`: what was read stays, and the lock is released at once
instead of after ``read_timeout``.  A body that keeps arriving is never
interrupted.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from typing import Any

#: recv_into buffer of the socket path: the most one read returns.
RECV_BUFFER = 1024 * 1024
#: The buffer a body starts with: a slow body (a site's link, a few kB per
#: read) never needs more, and hundreds of them at once must not hold a
#: megabyte each.  A read that fills it makes the next buffer 4 times larger,
#: up to RECV_BUFFER, so a fast body reaches the large reads after a few.
FIRST_RECV_BUFFER = 64 * 1024
#: read() size of the portable path: the most a failed connection may lose.
PORTABLE_BLOCK = 64 * 1024
#: Full-size receive buffers a process keeps between bodies (a fast body
#: needs two): allocating a megabyte per body, zeroed and page-faulted anew,
#: cost more than the system calls that receive it.
MAX_SPARE_BUFFERS = 2

#: Seconds of silence after which a body's reader asks whether another
#: request wants the upload, and again after each further such slice.
RELEASE_POLL = 0.5

Reader = Callable[[int], Any]


class StableBuffer(bytearray):
    """A receive buffer of the socket path.  A block returned from it (a
    memoryview whose ``obj`` is this buffer) is not written to before the
    second read after the one that returned it, nor after the body ended
    until the reader's ``with`` block is left: whoever consumes each block
    before asking for the one after next may use it in place.  One who still
    reads a block after that sets :attr:`hashing`: the buffer then serves
    no other body before that future is done."""

    hashing: Future[Any] | None = None


_spares: list[StableBuffer] = []
_spares_lock = threading.Lock()


def _full_size_buffer() -> StableBuffer:
    with _spares_lock:
        for index, buffer in enumerate(_spares):
            if buffer.hashing is None or buffer.hashing.done():
                buffer.hashing = None
                return _spares.pop(index)
    return StableBuffer(RECV_BUFFER)


def _give_back(buffers: list[StableBuffer]) -> None:
    with _spares_lock:
        for buffer in buffers:
            if len(buffer) == RECV_BUFFER and len(_spares) < MAX_SPARE_BUFFERS:
                _spares.append(buffer)


class BodyGone(Exception):
    """The body could not be read to its end (client gone, reset, timeout)."""


class BodyReleased(BodyGone):
    """The body fell silent and another request asked for the upload."""


@contextmanager
def body_reader(
    environ: dict[str, Any],
    expected: int | None,
    timeout: float,
    released: Callable[[], bool] | None = None,
) -> Iterator[Reader]:
    """A ``read(n)`` over the request body that returns what has arrived (at
    most ``n`` bytes; empty at the end) and raises :class:`BodyGone` when the
    body ends early or the connection fails.  Reads wait at most ``timeout``
    seconds for data (under gunicorn); silent for :data:`RELEASE_POLL`
    seconds, they raise :class:`BodyReleased` once ``released()`` says so."""
    sock = environ.get("gunicorn.socket")
    previous = sock.gettimeout() if sock is not None else None
    if sock is not None:
        sock.settimeout(timeout)
    fast = None
    try:
        source = environ["wsgi.input"]
        fast = (
            _socket_reader(source, sock, expected, timeout, released) if sock is not None else None
        )
        yield fast.read if fast is not None else _portable_reader(source, expected)
    finally:
        if fast is not None:
            fast.release()
        if sock is not None:
            with suppress(OSError):
                sock.settimeout(previous)


def _portable_reader(stream: Any, expected: int | None) -> Reader:
    received = 0

    def read(size: int) -> bytes:
        nonlocal received
        size = min(size, PORTABLE_BLOCK)
        if expected is not None:
            size = min(size, expected - received)
            if size <= 0:
                return b""
        try:
            block: bytes = stream.read(size)
        except Exception as error:
            raise BodyGone(str(error) or type(error).__name__) from error
        if not block and expected is not None and received < expected:
            raise BodyGone("the body ended early")
        received += len(block)
        return block

    return read


def _socket_reader(
    body: Any,
    sock: socket.socket,
    expected: int | None,
    timeout: float,
    released: Callable[[], bool] | None,
) -> _SocketBody | None:
    """The socket path, if ``body`` is gunicorn's reader of a body of known
    length that nobody has read yet; None otherwise."""
    try:
        from gunicorn.http.body import Body, LengthReader
    except ImportError:
        return None
    if type(body) is not Body or type(body.reader) is not LengthReader or expected is None:
        return None
    reader = body.reader
    unreader: Any = getattr(reader, "unreader", None)
    if getattr(unreader, "sock", None) is not sock or not hasattr(unreader, "take_buffered"):
        return None
    if body.buf.tell() or reader.length != expected:
        return None
    # Bytes gunicorn read ahead with the headers; beyond the body they belong
    # to the next request on the connection and go back.
    buffered = unreader.take_buffered()
    ahead, rest = buffered[: reader.length], buffered[reader.length :]
    if rest:
        unreader.unread(rest)
    reader.length -= len(ahead)
    return _SocketBody(body, sock, ahead, timeout, released)


class _SocketBody:
    def __init__(
        self,
        body: Any,
        sock: socket.socket,
        ahead: bytes,
        timeout: float,
        released: Callable[[], bool] | None,
    ) -> None:
        self.body = body
        self.reader = body.reader
        self.sock = sock
        self.timeout = timeout
        self.released = released
        # The socket's timeout: one slice of the wait for data.
        self.poll = min(timeout, RELEASE_POLL) if released is not None else timeout
        sock.settimeout(self.poll)
        self.ahead = io.BytesIO(ahead)
        #: the two buffers reads alternate between, each made when a read
        #: first needs it (a body that arrives in one read makes one)
        self.buffers: list[StableBuffer | None] = [None, None]
        #: the size of the buffers the next reads fill
        self.buffer_size = 0
        self.turn = 0
        self._grow(FIRST_RECV_BUFFER)

    def _grow(self, size: int) -> None:
        # No bigger than what is left of the body: a small PATCH does not
        # zero a larger buffer than it can fill.
        self.buffer_size = max(self.buffer_size, min(size, RECV_BUFFER, max(self.reader.length, 1)))

    def _buffer(self) -> StableBuffer:
        """The buffer of this turn, replaced if smaller than the size now
        wanted (a block handed out earlier keeps the old one alive, unchanged)."""
        buffer = self.buffers[self.turn]
        if buffer is None or len(buffer) < self.buffer_size:
            size = self.buffer_size
            buffer = _full_size_buffer() if size == RECV_BUFFER else StableBuffer(size)
            self.buffers[self.turn] = buffer
        return buffer

    def release(self) -> None:
        """The body is done with: its full-size buffers may serve another."""
        buffers, self.buffers = self.buffers, [None, None]
        _give_back([buffer for buffer in buffers if buffer is not None])

    def read(self, size: int) -> bytes | memoryview:
        """Up to ``size`` bytes; a memoryview stays valid (and unchanged)
        until the second call after this one (see :class:`StableBuffer`)."""
        if size <= 0:
            return b""
        block = self.ahead.read(size)
        if block:
            return block
        wanted = min(size, self.reader.length, self.buffer_size)
        if wanted <= 0:
            return b""
        view = memoryview(self._buffer())
        try:
            try:
                count = self.sock.recv_into(view, wanted)
            except TimeoutError:
                count = self._after_silence(view, wanted)
        except OSError as error:
            self.body.failed = True  # gunicorn then closes the connection
            raise BodyGone(str(error) or type(error).__name__) from error
        if count == 0:
            self.body.failed = True
            raise BodyGone("the client closed the connection before the body ended")
        self.reader.length -= count
        self.turn ^= 1
        if count == len(view) and count < RECV_BUFFER:
            # The body arrives faster than it is read: larger reads.
            self._grow(count * 4)
        return view[:count]

    def _after_silence(self, view: memoryview, wanted: int) -> int:
        """``recv_into`` after a slice of silence: ask ``released()`` after
        each slice; TimeoutError once ``timeout`` seconds have passed
        without data."""
        poll = self.poll
        silent_since = time.monotonic() - poll
        while True:
            if self.released is not None and self.released():
                self.body.failed = True
                raise BodyReleased(
                    f"no data for {time.monotonic() - silent_since:.1f} s "
                    "and another request asked for the upload"
                )
            left = self.timeout - (time.monotonic() - silent_since)
            if left <= 0:
                raise TimeoutError("timed out")
            if left < poll:
                self.sock.settimeout(left)
            try:
                count = self.sock.recv_into(view, wanted)
            except TimeoutError:
                continue
            if left < poll:
                self.sock.settimeout(poll)
            return count
