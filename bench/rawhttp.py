"""A minimal HTTP/1.1 client over one keep-alive socket, sending bodies with
``sendfile`` so the client is never the bottleneck.  The same client drives
every server in a benchmark run."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    def __init__(self, host: str, port: int, timeout: float = 600) -> None:
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")
        self.bytes_sent = 0

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        file: BinaryIO | None = None,
        offset: int = 0,
        count: int = 0,
    ) -> Reply:
        headers = dict(headers or {})
        length = len(body) if body is not None else count if file is not None else 0
        if body is not None or file is not None or method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(length)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        head += "".join(f"{key}: {value}\r\n" for key, value in headers.items()) + "\r\n"
        self.sock.sendall(head.encode("latin-1"))
        if body:
            self.sock.sendall(body)
        elif file is not None and count:
            sent = 0
            while sent < count:
                sent += self.sock.sendfile(file, offset + sent, count - sent)
        self.bytes_sent += length
        return self._read_reply(method)

    def _read_reply(self, method: str) -> Reply:
        status_line = self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := self.reader.readline()) not in (b"\r\n", b"\n", b""):
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        body = b""
        if method != "HEAD" and status not in (204, 304):
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = self._read_chunked()
            else:
                body = self.reader.read(int(headers.get("content-length", "0")))
        return Reply(status, headers, body)

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.reader.readline().split(b";")[0], 16)
            if size == 0:
                self.reader.readline()
                return b"".join(parts)
            parts.append(self.reader.read(size))
            self.reader.readline()


def file_size(file: BinaryIO) -> int:
    return os.fstat(file.fileno()).st_size


def patch_file(
    connection: Connection,
    target: str,
    file: BinaryIO,
    size: int,
    chunk: int,
    checksum: Callable[[int, int, int], str] | None = None,
) -> None:
    """Send ``size`` bytes of ``file`` to the tus upload at ``target``, from
    offset 0, in ``chunk``-sized PATCHes; ``checksum(number, offset, count)``
    gives the ``Upload-Checksum`` of each chunk, if any."""
    offset, number = 0, 0
    while offset < size:
        count = min(chunk, size - offset)
        headers = {
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
        }
        if checksum is not None:
            headers["Upload-Checksum"] = checksum(number, offset, count)
        reply = connection.request("PATCH", target, headers, file=file, offset=offset, count=count)
        assert reply.status == 204, (reply.status, reply.body)
        offset = int(reply.headers["upload-offset"])
        number += 1
