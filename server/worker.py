"""The gunicorn worker of ``serve``: gunicorn's threaded worker (gthread),
made to hold hundreds of slow uploads while everything else still answers.

A PATCH holds a thread for as long as its body streams in (minutes over a
slow link), so the pool must be large (``threads``, hundreds per worker;
threads waiting on sockets cost memory, little else: docs/operators/scaling.md)
and a thread must only ever be taken by a request that can use it.
Four changes to gunicorn's worker do that:

* **Bodies take at most ``threads - 16`` threads** (:func:`reserved_threads`):
  the rest answer requests without a body (pings, the read API, HEAD,
  creations) however many uploads are in flight.  A request with a body past
  that waits for a slot without a thread (parked, its head already read).
* **Accept only with a thread free.**  All workers listen on one shared
  socket; a worker whose threads are all busy stops accepting, so a new
  connection (a ping, a links lookup, a new upload) goes to a worker that can
  serve it now instead of waiting in a full worker's queue.  (With a socket
  per worker the kernel picks the worker by a hash, not by load.)  A busy
  worker lets idle ones take a connection first (:meth:`accept_delay`).
* **No thread before a request arrives, and its header within
  ``header_timeout``.**  A new connection waits in the worker's event loop,
  not in a thread, until it sends something, and is closed if nothing comes
  within ``header_timeout``; the request line and headers must then be
  complete within ``header_timeout`` too.  A client that opens connections
  and sends nothing (or a header byte by byte) holds no capacity for longer.
  The body is the tus layer's business: it stalls for at most
  ``read_timeout`` (server/tus/body.py).
* **A stop that does not wait for clients.**  On SIGTERM the worker stops
  listening at once (the address refuses connections instead of accepting
  them unanswered), closes connections that never sent a request, ends
  request bodies in flight (``shutdown(SHUT_RD)``: the tus layer keeps every
  byte received, answers, and releases the upload's lock, as when a client
  goes away), and closes idle keep-alive connections within gunicorn's 2 s
  linger.  Requests that are past their body (finishing an upload) still get
  ``graceful_timeout``.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections import deque
from contextlib import suppress
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

#: Seconds a new connection may take to send its request line and headers.
DEFAULT_HEADER_TIMEOUT = 10.0

#: Seconds between two of the worker's heartbeats to the arbiter (a file's
#: time set, one system call).  gunicorn's loop sends one at every turn,
#: several per request; the arbiter's ``timeout`` (an hour for ``serve``)
#: only needs one now and then.
HEARTBEAT_INTERVAL = 1.0


#: Returned for a request whose body must wait for a body slot.
_PARKED = object()


def has_body(request: Any) -> bool:
    """Whether a parsed request (gunicorn's) comes with a body to read."""
    for name, value in request.headers:
        if name == "CONTENT-LENGTH":
            return value.strip() not in ("", "0")
        if name == "TRANSFER-ENCODING":
            return True
    return False


def reserved_threads(threads: int) -> int:
    """Threads of a worker kept for requests without a body (pings, the read
    API, HEAD, upload creations): 16, or fewer in a small pool."""
    return max(1, min(16, threads // 8)) if threads > 1 else 0


class _TimedParser:
    """gunicorn's request parser, with the socket's timeout set to the
    header timeout while it reads a request's head.  A request parked while
    it waited for a body slot comes out first."""

    def __init__(self, parser: Any, conn: TConn, timeout: float) -> None:
        self.parser = parser
        self.conn = conn
        self.timeout = timeout
        self.parked: Any = None

    def __iter__(self) -> _TimedParser:
        return self

    def __next__(self) -> Any:
        if self.parked is not None:
            request, self.parked = self.parked, None
            return request
        self.conn.sock.settimeout(self.timeout)
        try:
            return next(self.parser)
        except TimeoutError:
            raise StopIteration("no complete request head within the header timeout") from None
        finally:
            with suppress(OSError):
                self.conn.sock.settimeout(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)


# gunicorn has no type information: its classes are Any to mypy.
class _Connection(TConn):  # type: ignore[misc]
    parser: Any

    def __init__(self, *args: Any, header_timeout: float) -> None:
        super().__init__(*args)
        self.header_timeout = header_timeout

    def init(self) -> None:
        super().init()
        # HTTP/1 only: an HTTP/2 connection (if a configuration enables it)
        # keeps gunicorn's own handling.
        if (
            self.parser is not None
            and not self.is_http2
            and not isinstance(self.parser, _TimedParser)
        ):
            self.parser = _TimedParser(self.parser, self, self.header_timeout)


class UploadWorker(ThreadWorker):  # type: ignore[misc]
    """See the module's docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = getattr(self.app, "settings", None)
        self.header_timeout = float(
            getattr(settings, "header_timeout", None) or DEFAULT_HEADER_TIMEOUT
        )
        #: Connections handed to the thread pool and not finished yet.
        self.in_threads: set[TConn] = set()
        #: Requests reading a body (at most ``body_slots``), and connections
        #: whose request waits for one of these slots, without a thread.
        self.body_slots = self.cfg.threads - reserved_threads(self.cfg.threads)
        self.bodies = 0
        self.bodies_lock = threading.Lock()
        self.parked: deque[_Connection] = deque()
        self.stop_begun = False
        self.last_heartbeat = -HEARTBEAT_INTERVAL

    def notify(self) -> None:
        """Tell the arbiter the worker is alive, at most every
        :data:`HEARTBEAT_INTERVAL` seconds."""
        now = time.monotonic()
        if now - self.last_heartbeat >= HEARTBEAT_INTERVAL:
            self.last_heartbeat = now
            super().notify()

    # -- a thread only for a request that has arrived --------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            client, address = listener.accept()
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        conn = _Connection(
            self.cfg, client, address, listener.getsockname(), header_timeout=self.header_timeout
        )
        # Wait in the event loop (gunicorn's "pending" connections) until the
        # client sends something, at most header_timeout.
        conn.timeout = time.monotonic() + self.header_timeout
        self.pending_conns.append(conn)
        self.poller.register(
            conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn)
        )

    def enqueue_req(self, conn: TConn) -> None:
        self.in_threads.add(conn)
        super().enqueue_req(conn)

    def finish_request(self, conn: TConn, fs: Any) -> None:
        self.in_threads.discard(conn)
        if not fs.cancelled() and fs.exception() is None and fs.result() is _PARKED:
            if self.alive:
                self.parked.append(conn)
                self.release_parked()  # a slot may have been freed meanwhile
            else:
                self.nr_conns -= 1
                conn.close()
            return
        super().finish_request(conn, fs)

    # -- bodies take at most body_slots threads ----------------------------------

    def handle_request(self, req: Any, conn: TConn) -> Any:
        if not has_body(req):
            return super().handle_request(req, conn)
        with self.bodies_lock:
            if self.bodies >= self.body_slots:
                conn.parser.parked = req
                return _PARKED
            self.bodies += 1
        try:
            return super().handle_request(req, conn)
        finally:
            with self.bodies_lock:
                self.bodies -= 1
            self.method_queue.defer(self.release_parked)

    def _keepalive_after(self, conn: TConn, keepalive: Any) -> Any:
        if keepalive is _PARKED:
            return _PARKED
        return super()._keepalive_after(conn, keepalive)

    def release_parked(self) -> None:
        """Hand waiting requests to threads while body slots are free (main thread)."""
        while self.alive and self.parked and self.bodies < self.body_slots:
            self.enqueue_req(self.parked.popleft())

    # -- accept only with a thread free, stop promptly -------------------------------

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self.alive:
            free = (
                self.nr_conns < self.worker_connections and len(self.in_threads) < self.cfg.threads
            )
            delay = self.accept_delay() if free else 0.0
            if delay:
                self.set_accept_enabled(False)
                super().wait_for_and_dispatch_events(min(timeout, delay))
            self.set_accept_enabled(free)
        else:
            self.begin_stop()
        super().wait_for_and_dispatch_events(timeout)

    def accept_delay(self) -> float:
        """How long a worker with threads free lets the other workers take a
        new connection first.  All workers wait on the shared socket and the
        first awake wins: without a delay, connections arriving together
        (8 clients starting at once) all land in one worker and share its
        GIL.  A worker with every body slot taken (or as many connections
        as slots) waits longer: the next connection may be an upload, which
        it could only park.  A heuristic: a worker slower to wake than that
        (a loaded machine) may still park an upload another could serve."""
        load = len(self.in_threads) + len(self.pending_conns) + len(self.parked)
        if self.bodies >= self.body_slots or load >= self.body_slots:
            return 0.01
        return 0.002 if load else 0.0

    def begin_stop(self) -> None:
        if self.stop_begun:
            return
        self.stop_begun = True
        self.set_accept_enabled(False)
        for listener in self.sockets:
            listener.close()
        while self.parked:  # never answered: the client sends the request again
            self.nr_conns -= 1
            self.parked.popleft().close()
        while self.pending_conns:
            conn = self.pending_conns.popleft()
            with suppress(OSError, KeyError, ValueError):
                self.poller.unregister(conn.sock)
            self.nr_conns -= 1
            conn.close()
        for conn in list(self.in_threads):
            # A body being read ends as if the client had gone (its bytes
            # kept); a response being written is not affected.
            with suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RD)
        if self.in_threads:
            self.log.info("stopping: ended %d requests in flight", len(self.in_threads))
