"""A fault-injecting TCP proxy on loopback, for tests and benchmarks.

It sits between a client and a server on 127.0.0.1 and forwards bytes both
ways, misbehaving as :class:`Faults` says:

* **cuts**: a connection is cut after a random number of client-to-server
  bytes: the client's side is reset (as a dropped link looks to it), the
  server's side is closed after the bytes forwarded so far (as a dropped
  link looks to a server: a short body);
* **stalls**: a connection stops forwarding client-to-server bytes at
  a random point, for ``stall_seconds``, then is cut (at most ``max_stalls``
  connections: a link that goes dark once, for as long as a test runs);
* **corruption**: the first ``corrupt_connections`` connections get one
  client-to-server byte flipped, at a random offset in ``corrupt_at``;
* **link resets**: every ``cut_link_every`` client-to-server bytes of all
  connections together (a random count in the range, drawn again after each
  reset), the connection carrying that byte is cut as above: a link that drops
  a connection every so many megabytes, whatever the number of connections;
* **rate**: client-to-server bytes are limited to ``rate`` bytes per second
  per connection, and to ``total_rate`` for all connections together; time
  a connection spends idle is not credited (no burst after a pause: a
  request that waited for an answer starts at the link's rate, as on a real
  link);
* **delay**: each direction delivers bytes ``delay`` seconds after they were
  read (so the round trip gains ``2 * delay``), with at most ``window``
  bytes in flight per direction (what a TCP window allows on such a path).

:meth:`FaultProxy.hold` stops the connections open at that moment from
forwarding client-to-server bytes (new connections go through): a test that
needs a transfer to stand still while it does something, such as signal the
client, holds it instead of racing it.

It counts the bytes it received from clients (``up_bytes``: the bytes the
client put on the wire) and from servers (``down_bytes``), connections, cuts
and stalls.  Everything is bounded: the proxy only ever talks to the given
loopback upstream and stops with :meth:`stop`.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import random
import socket
import struct
import termios
import threading
import time
from dataclasses import dataclass, field

RECV_SIZE = 64 * 1024
RCVBUF = 256 * 1024


@dataclass
class Faults:
    #: cut each connection after this many client-to-server bytes, drawn
    #: uniformly from the range (None: never cut)
    cut_after: tuple[int, int] | None = None
    #: stall a connection with this probability, after a number of bytes
    #: drawn from ``stall_after``
    stall_probability: float = 0.0
    stall_after: tuple[int, int] = (0, 1 << 20)
    stall_seconds: float = 3.0
    #: stall at most this many connections (None: any number)
    max_stalls: int | None = None
    #: flip one byte (at an offset drawn from ``corrupt_at``) of the first N connections
    corrupt_connections: int = 0
    corrupt_at: tuple[int, int] = (8 * 1024, 200 * 1024)
    #: cut the connection carrying the link's next marked byte, the marks
    #: drawn uniformly from this range of client-to-server bytes of all
    #: connections together (None: never)
    cut_link_every: tuple[int, int] | None = None
    #: client-to-server bandwidth limit per connection, bytes per second (None: none)
    rate: float | None = None
    #: client-to-server bandwidth limit of all connections together (None: none)
    total_rate: float | None = None
    #: one-way delay in seconds, and the bytes in flight allowed per direction
    delay: float = 0.0
    window: int = 4 << 20


@dataclass
class Counters:
    up_bytes: int = 0
    #: of ``up_bytes``, those that had arrived but were dropped by a cut or stall
    lost_bytes: int = 0
    down_bytes: int = 0
    connections: int = 0
    cuts: int = 0
    corruptions: int = 0
    stalls: int = 0
    #: :func:`time.monotonic` when each stall began
    stall_times: list[float] = field(default_factory=list, repr=False)
    #: :func:`time.monotonic` when each forwarded piece of client-to-server
    #: bytes reaches the server (after the delay), in order per connection
    arrivals: list[float] = field(default_factory=list, repr=False)
    #: the size of each of those pieces, in the same order
    arrival_sizes: list[int] = field(default_factory=list, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, value: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + value)


def _reset(sock: socket.socket) -> None:
    """Close with a RST (SO_LINGER 0), as a peer that vanished."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _DelayLine:
    """Delivers pieces ``delay`` seconds after they were put, with a cap on the
    bytes held (the reader blocks when the cap is reached)."""

    def __init__(self, target: socket.socket, delay: float, window: int, stop: threading.Event):
        self.target = target
        self.delay = delay
        self.window = window
        self.stop = stop
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.held = 0
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def put(self, data: bytes) -> bool:
        with self.cond:
            while self.held >= self.window and not self.closed and not self.stop.is_set():
                self.cond.wait(0.5)
            if self.closed or self.stop.is_set():
                return False
            self.queue.append((time.monotonic() + self.delay, data))
            self.held += len(data)
            self.cond.notify_all()
        return True

    def finish(self) -> None:
        """No more data: deliver what is held, then let the thread end."""
        with self.cond:
            self.queue.append((time.monotonic() + self.delay, b""))
            self.cond.notify_all()

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.cond:
                while not self.queue and not self.stop.is_set():
                    self.cond.wait(0.5)
                if self.stop.is_set():
                    return
                due, data = self.queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with self.cond:
                self.queue.popleft()
                self.held -= len(data)
                self.cond.notify_all()
            if not data:
                with contextlib.suppress(OSError):
                    self.target.shutdown(socket.SHUT_WR)
                return
            try:
                self.target.sendall(data)
            except OSError:
                with self.cond:
                    self.closed = True
                    self.cond.notify_all()
                return


class _Connection:
    def __init__(self, proxy: FaultProxy, client: socket.socket, number: int) -> None:
        self.proxy = proxy
        self.client = client
        self.rng = random.Random(proxy.seed * 1_000_003 + number)
        faults = proxy.faults
        self.faults = faults
        self.cut_at = self.rng.randint(*faults.cut_after) if faults.cut_after else None
        self.stall_at = (
            self.rng.randint(*faults.stall_after)
            if faults.stall_probability and self.rng.random() < faults.stall_probability
            else None
        )
        self.corrupt_at = (
            self.rng.randint(*faults.corrupt_at) if number <= faults.corrupt_connections else None
        )
        self.number = number
        self.done = threading.Event()
        self.server: socket.socket | None = None

    def run(self) -> None:
        try:
            self.server = socket.create_connection(self.proxy.upstream, timeout=10)
            self.server.settimeout(None)
        except OSError:
            _reset(self.client)
            return
        self.proxy.sockets.append(self.server)
        for sock in (self.client, self.server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        down = threading.Thread(target=self._down, daemon=True)
        down.start()
        try:
            self._up()
        finally:
            self.done.set()
            down.join(timeout=30)

    def _stall(self) -> None:
        self.proxy.stopping.wait(self.faults.stall_seconds)
        self._cut()

    def _cut(self) -> None:
        assert self.server is not None
        # Bytes that crossed the link but were not read yet count as sent.
        with contextlib.suppress(OSError, ValueError):
            pending = struct.unpack("i", fcntl.ioctl(self.client, termios.FIONREAD, b"\0" * 4))[0]
            self.proxy.counters.add("up_bytes", pending)
            self.proxy.counters.add("lost_bytes", pending)
        _reset(self.client)
        _close(self.server)

    def _up(self) -> None:
        assert self.server is not None
        counters = self.proxy.counters
        line = (
            _DelayLine(self.server, self.faults.delay, self.faults.window, self.proxy.stopping)
            if self.faults.delay
            else None
        )
        forwarded = 0
        free_at = 0.0  # when this connection's link is free again (rate)
        while not self.proxy.stopping.is_set():
            limit = RECV_SIZE
            for mark in (self.cut_at, self.stall_at):
                if mark is not None and mark > forwarded:
                    limit = min(limit, mark - forwarded)
            if self.stall_at is not None and forwarded >= self.stall_at:
                if self.proxy.take_stall():
                    self._stall()
                    return
                self.stall_at = None
            if self.cut_at is not None and forwarded >= self.cut_at:
                counters.add("cuts")
                self._cut()
                return
            self.proxy.wait_while_held(self.number)
            try:
                data = self.client.recv(limit)
            except OSError:
                data = b""
            if not data:
                if line is not None:
                    line.finish()
                else:
                    with contextlib.suppress(OSError):
                        self.server.shutdown(socket.SHUT_WR)
                return
            counters.add("up_bytes", len(data))
            if self.corrupt_at is not None and forwarded <= self.corrupt_at < forwarded + len(data):
                flipped = bytearray(data)
                flipped[self.corrupt_at - forwarded] ^= 0xFF
                data = bytes(flipped)
                counters.add("corruptions")
            kept, link_reset = self.proxy.link_take(len(data))
            if kept < len(data):
                # Past the link's reset: on the wire, never delivered.
                counters.add("lost_bytes", len(data) - kept)
                data = data[:kept]
            if self.faults.rate:
                free_at = max(free_at, time.monotonic()) + len(data) / self.faults.rate
                self.proxy.stopping.wait(max(0.0, free_at - time.monotonic()))
            self.proxy.pace_total(len(data))
            if line is not None:
                if not line.put(data):
                    return
            else:
                try:
                    self.server.sendall(data)
                except OSError:
                    _reset(self.client)
                    return
            forwarded += len(data)
            with counters.lock:
                counters.arrivals.append(time.monotonic() + self.faults.delay)
                counters.arrival_sizes.append(len(data))
            if link_reset:
                counters.add("cuts")
                self._cut()
                return

    def _down(self) -> None:
        assert self.server is not None
        counters = self.proxy.counters
        line = (
            _DelayLine(self.client, self.faults.delay, self.faults.window, self.proxy.stopping)
            if self.faults.delay
            else None
        )
        while not self.proxy.stopping.is_set():
            try:
                data = self.server.recv(RECV_SIZE)
            except OSError:
                data = b""
            if not data:
                if line is not None:
                    line.finish()
                    line.thread.join(timeout=30)
                with contextlib.suppress(OSError):
                    self.client.shutdown(socket.SHUT_WR)
                return
            counters.add("down_bytes", len(data))
            if line is not None:
                if not line.put(data):
                    return
            else:
                try:
                    self.client.sendall(data)
                except OSError:
                    return


class FaultProxy:
    """``with FaultProxy(port, Faults(...)) as proxy:`` then talk to ``proxy.url``."""

    def __init__(self, upstream_port: int, faults: Faults | None = None, seed: int = 0) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.faults = faults or Faults()
        self.seed = seed
        self.counters = Counters()
        self.stopping = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # A receive buffer of a real link's size, not loopback's megabytes:
        # what it holds at a cut is lost (and counted).
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = []
        self.link_lock = threading.Lock()
        self.link_rng = random.Random(seed)
        self.link_bytes = 0  # client-to-server bytes of all connections
        self.next_link_reset: int | None = None
        self.link_free_at = 0.0  # when the shared link is free again (total_rate)
        self.accepted = 0  # connections accepted so far, numbered from 1
        #: connections numbered up to this one forward nothing from their client
        self.held_through = 0
        self.held = threading.Condition()
        self.acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self.acceptor.start()
        return self

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self.held:
                self.accepted += 1
                number = self.accepted
            self.counters.add("connections")
            connection = _Connection(self, client, number)
            self.sockets.append(client)
            thread = threading.Thread(target=connection.run, daemon=True)
            thread.start()
            self.threads.append(thread)

    def _draw_link_reset(self) -> int | None:
        every = self.faults.cut_link_every
        return self.link_bytes + self.link_rng.randint(*every) if every else None

    def link_take(self, count: int) -> tuple[int, bool]:
        """``count`` bytes arrived on one connection: how many of them the link
        carries before its next reset, and whether that reset falls here (the
        connection is then cut after them)."""
        with self.link_lock:
            if self.faults.cut_link_every is None:
                self.next_link_reset = None
            elif self.next_link_reset is None:
                self.next_link_reset = self._draw_link_reset()
            mark = self.next_link_reset
            if mark is None or self.link_bytes + count < mark:
                self.link_bytes += count
                return count, False
            kept = mark - self.link_bytes
            self.link_bytes = mark
            self.next_link_reset = self._draw_link_reset()
            return kept, True

    def take_stall(self) -> bool:
        """Whether a connection may stall now (counted if so)."""
        with self.link_lock:
            limit = self.faults.max_stalls
            if limit is not None and self.counters.stalls >= limit:
                return False
            self.counters.add("stalls")
            self.counters.stall_times.append(time.monotonic())
            return True

    def pace_total(self, count: int) -> None:
        """Hold ``count`` bytes until the shared link (``total_rate``) has carried
        them after every byte queued before them."""
        rate = self.faults.total_rate
        if not rate:
            return
        with self.link_lock:
            self.link_free_at = max(self.link_free_at, time.monotonic()) + count / rate
            due = self.link_free_at
        self.stopping.wait(max(0.0, due - time.monotonic()))

    def hold(self) -> int:
        """Stop every connection open now from forwarding client-to-server
        bytes (what a connection had read before goes on to the server: at
        most one read, 64 KiB); connections made later are not held.  Until
        :meth:`release` or :meth:`stop`.  Returns the number of connections held."""
        with self.held:
            self.held_through = self.accepted
            return self.held_through

    def release(self) -> None:
        """The held connections forward again."""
        with self.held:
            self.held_through = 0
            self.held.notify_all()

    def wait_while_held(self, number: int) -> None:
        with self.held:
            while number <= self.held_through and not self.stopping.is_set():
                self.held.wait(0.2)

    def reset_counters(self) -> None:
        self.counters = Counters()

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        for sock in self.sockets:
            _close(sock)
        self.acceptor.join(timeout=5)
        for thread in self.threads:
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
