"""Request bodies sent with ``sendfile``: the kernel copies file bytes to the socket.

urllib3 sends a request body by handing each piece of it to its connection's
``send``.  The transport's slice bodies (:class:`dqrxfer.transport.SliceBody`)
can give their file content as :class:`~dqrxfer.regions.FileRegion` pieces
instead of bytes, and the connections made here send such a region

* over a plain TCP socket with :meth:`socket.socket.sendfile`: nothing is read
  into Python, and the socket's timeout still bounds every wait for the peer;
* over TLS (which ``sendfile`` cannot encrypt) by reading the file into one
  buffer per connection, reused for every block, and sending from it.

Everything else about a request is requests' and urllib3's as usual: headers,
auth handlers (a 401 re-send iterates the body afresh), cookies, timeouts,
connection reuse and the response.  :class:`SendfileAdapter` is the
``requests`` adapter whose connection pools make these connections;
:func:`dqrxfer.session.make_session` mounts it.  Behind an HTTP proxy the
proxy's own connections are used, and they send a region as the iterable
of byte blocks it also is.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .regions import FileRegion, shrank

#: Size of the buffer a TLS connection reads a file region into.
TLS_BLOCK = 1024 * 1024


def send_region(sock: socket.socket, region: FileRegion, buffer: bytearray | None) -> bytearray:
    """Send ``region`` on ``sock``; returns the buffer to keep for the next one."""
    with region.open() as handle:
        if type(sock) is socket.socket:
            sent = sock.sendfile(handle, region.start, len(region))
        else:
            buffer = buffer or bytearray(TLS_BLOCK)
            view = memoryview(buffer)
            handle.seek(region.start)
            sent = 0
            while sent < len(region):
                count = handle.readinto(view[: min(len(buffer), len(region) - sent)])
                if not count:
                    break
                sock.sendall(view[:count])
                sent += count
    if sent != len(region):
        raise shrank(region.path)
    return buffer or bytearray()


# The mixin below is checked as the connection class it is mixed into.
if TYPE_CHECKING:
    _Connection = HTTPConnection
else:
    _Connection = object


class _SendsRegions(_Connection):
    """``send`` that knows :class:`FileRegion` (mixed into urllib3's connections)."""

    _region_buffer: bytearray | None = None

    def send(self, data: Any) -> None:
        if isinstance(data, FileRegion):
            if self.sock is None:
                self.connect()
            assert self.sock is not None
            self._region_buffer = send_region(self.sock, data, self._region_buffer)
            return
        super().send(data)


class SendfileHTTPConnection(_SendsRegions, HTTPConnection):
    pass


class SendfileHTTPSConnection(_SendsRegions, HTTPSConnection):
    pass


class SendfileHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = SendfileHTTPConnection


class SendfileHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = SendfileHTTPSConnection


POOL_CLASSES = {"http": SendfileHTTPConnectionPool, "https": SendfileHTTPSConnectionPool}


class SendfileAdapter(HTTPAdapter):
    """requests' adapter, with connections that send file regions themselves."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(POOL_CLASSES)


def sends_regions(session: Any, url: str) -> bool:
    """Whether ``session``'s requests to ``url`` go through a :class:`SendfileAdapter`."""
    try:
        return isinstance(session.get_adapter(url), SendfileAdapter)
    except Exception:  # no adapter for the URL: requests raises when it sends
        return False
