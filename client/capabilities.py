"""What the server can do (OPTIONS, asked once per uploader), and what it
means for sending one payload: its size limit, the chunk checksum, how many
streams, and whether the payload is hashed while it is sent."""

from __future__ import annotations

import logging
import threading

from .blocks import EXTENSION as BLOCK_CHECKSUM
from .errors import RefusedError
from .payload import Payload, choose_checksum
from .planning import UploadOptions
from .retry import Retrier
from .transport import Capabilities, TusClient
from .units import format_size

log = logging.getLogger("dqr-xfer")


class CapabilityCache:
    """The server's answer to OPTIONS, asked once (retried like any other
    request) and shared by the threads of one uploader."""

    def __init__(self) -> None:
        self._capabilities: Capabilities | None = None
        self._lock = threading.Lock()

    def get(self, tus: TusClient, retrier: Retrier) -> Capabilities:
        with self._lock:
            if self._capabilities is None:
                self._capabilities = retrier.call(tus.capabilities)
            return self._capabilities


def check_size(payload: Payload, caps: Capabilities) -> None:
    """Refuse a payload larger than the server's Tus-Max-Size, before sending."""
    if caps.max_size is not None and payload.size > caps.max_size:
        raise RefusedError(
            413,
            f"{payload.source} is {format_size(payload.size)} ({payload.size} bytes); the "
            f"server accepts at most {format_size(caps.max_size)} ({caps.max_size} bytes)",
        )


def chunk_algorithm(options: UploadOptions, caps: Capabilities) -> str | None:
    """The chunk checksum to send (None: none)."""
    if options.checksums and caps.has("checksum"):
        return choose_checksum(caps.checksum_algorithms)
    return None


def block_checksums(options: UploadOptions, algorithm: str | None, caps: Capabilities) -> bool:
    """Whether PATCHes carry block checksums (see :mod:`dqrxfer.blocks`): chunk
    checksums are sent, the options allow it and the server has the
    extension (ours: a standard tus server is sent ``Upload-Checksum`` as
    before)."""
    return options.block_checksums and algorithm is not None and caps.has(BLOCK_CHECKSUM)


def stream_count(options: UploadOptions, size: int, caps: Capabilities) -> int:
    """How many partial uploads send a payload of ``size`` bytes at once."""
    wanted = options.parallel
    if wanted <= 1:
        return 1
    if not caps.has("concatenation"):
        log.warning(
            "the server has no concatenation extension: sending in one stream, not %d",
            wanted,
        )
        return 1
    chunks = -(-size // options.chunk_size)
    return max(1, min(wanted, chunks))


def hashed_while_sent(options: UploadOptions, size: int, streams: int, caps: Capabilities) -> bool:
    """True if the payload goes as partial uploads hashed while they are sent
    (see :mod:`dqrxfer.partials`), False if it is hashed first and sent as one."""
    return caps.has("concatenation") and (streams > 1 or size >= options.overlap_min_size)
