"""What the server can do (OPTIONS), and what it means for sending one
payload: its size limit, the chunk checksum, how many streams, and whether
the payload is hashed while it is sent.

The answer to OPTIONS costs a round trip before the first byte (0.3 s to
KAGRA or EGO), and it rarely changes: it is remembered per server
(:class:`RememberedCapabilities`, a JSON file in the client's cache
directory) for :data:`REMEMBERED_FOR` seconds, so a repeat upload to the same
server sends no OPTIONS.  A refusal that a stale answer explains
(:func:`explained_by_stale`: a header or extension named, the size limit,
the endpoint gone) makes the uploader ask again and try once more with the
fresh answer.  A cache that cannot be read or written is no error: OPTIONS
is then asked every time.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from .blocks import EXTENSION as BLOCK_CHECKSUM
from .blocks import HEADER as BLOCK_HEADER
from .errors import DqrxferError, RefusedError
from .jsonfile import read_servers, write_servers
from .linkmemory import LinkRecord
from .payload import Payload, choose_checksum
from .planning import UploadOptions
from .resume import default_directory
from .retry import Retrier
from .transport import Capabilities, TusClient
from .units import format_size

log = logging.getLogger("dqr-xfer")

#: How long (seconds) a server's remembered answer to OPTIONS is used.
REMEMBERED_FOR = 3600.0
FORMAT = 1

#: Request headers whose refusal a changed server explains (its version, its
#: checksum algorithms, its extensions).
CAPABILITY_HEADERS = (
    "Tus-Resumable",
    "Upload-Checksum",
    BLOCK_HEADER,
    "Upload-Concat",
    "Upload-Defer-Length",
    "Upload-Length",
)


def default_path() -> Path:
    return default_directory().parent / "capabilities.json"


def explained_by_stale(error: RefusedError) -> bool:
    """Whether a remembered answer to OPTIONS, out of date, could explain
    ``error``: another protocol version (412), a smaller size limit (413),
    the endpoint moved (404, 405), or a 400 naming a header that depends on
    what the server offers."""
    if error.status in (404, 405, 412, 413):
        return True
    message = error.server_message.lower()
    return error.status == 400 and any(name.lower() in message for name in CAPABILITY_HEADERS)


class RememberedCapabilities:
    """Servers' answers to OPTIONS by endpoint URL, in one JSON file written
    atomically (temp file, fsync, rename); each used for ``max_age`` seconds."""

    def __init__(self, path: Path | None = None, max_age: float = REMEMBERED_FOR) -> None:
        self.path = path or default_path()
        self.max_age = max_age

    def _read(self) -> dict[str, Any]:
        return read_servers(self.path, FORMAT)

    def get(self, endpoint: str) -> Capabilities | None:
        """The answer remembered for ``endpoint`` if it is recent enough."""
        entry = self._read().get(endpoint)
        try:
            if not isinstance(entry, dict) or not 0 <= time.time() - entry["asked"] < self.max_age:
                return None
            max_size = entry["max_size"]
            return Capabilities(
                versions=tuple(str(item) for item in entry["versions"]),
                extensions=frozenset(str(item) for item in entry["extensions"]),
                checksum_algorithms=tuple(str(item) for item in entry["checksum_algorithms"]),
                max_size=None if max_size is None else int(max_size),
            )
        except (KeyError, TypeError, ValueError):
            log.debug("remembered capabilities of %s not understood: %.200s", endpoint, entry)
            return None

    def put(self, endpoint: str, capabilities: Capabilities | None) -> None:
        """Remember ``capabilities`` for ``endpoint`` (None: forget it)."""
        now = time.time()
        servers = {
            url: entry
            for url, entry in self._read().items()
            if url != endpoint
            and isinstance(entry, dict)
            and isinstance(entry.get("asked"), (int, float))
            and now - entry["asked"] < self.max_age
        }
        if capabilities is not None:
            servers[endpoint] = {
                "asked": now,
                "versions": list(capabilities.versions),
                "extensions": sorted(capabilities.extensions),
                "checksum_algorithms": list(capabilities.checksum_algorithms),
                "max_size": capabilities.max_size,
            }
        try:
            write_servers(self.path, FORMAT, servers)
        except OSError as error:
            log.debug("capabilities of %s not remembered: %s", endpoint, error)


class CapabilityCache:
    """The server's capabilities for the threads of one uploader: remembered
    from an earlier run (``remembered``), else asked with OPTIONS (retried
    like any other request) and remembered for the next run."""

    def __init__(self, endpoint: str, remembered: RememberedCapabilities | None = None) -> None:
        self.endpoint = endpoint
        self.remembered = remembered
        self._capabilities: Capabilities | None = None
        self._from_disk = False
        self._lock = threading.Lock()
        #: The round trip of the OPTIONS asked (seconds; None if none was):
        #: a cheap request's, which the upload's own connection may not have
        #: seen (on a first contact it creates the upload meanwhile).
        self.round_trip: float | None = None

    def get(self, tus: TusClient, retrier: Retrier) -> Capabilities:
        with self._lock:
            if self._capabilities is None and self.remembered is not None:
                self._capabilities = self.remembered.get(self.endpoint)
                self._from_disk = self._capabilities is not None
                if self._from_disk:
                    log.debug("capabilities of %s remembered from an earlier run", self.endpoint)
            if self._capabilities is None:
                self._capabilities = self._ask(tus, retrier)
            return self._capabilities

    def at_hand(self) -> Capabilities | None:
        """The capabilities if they are known without a request (asked by
        this uploader already, or remembered from an earlier run); None
        while another thread is asking them."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._capabilities is None and self.remembered is not None:
                self._capabilities = self.remembered.get(self.endpoint)
                self._from_disk = self._capabilities is not None
            return self._capabilities
        finally:
            self._lock.release()

    def ask_early(self, tus: TusClient) -> bool:
        """Have the capabilities at hand before they are needed: remembered,
        or OPTIONS asked once; True if they are.  A failure is no error here
        (logged at debug level): :meth:`get` asks again with retries, and
        its error is the one the user sees."""
        with self._lock:
            if self._capabilities is None and self.remembered is not None:
                self._capabilities = self.remembered.get(self.endpoint)
                self._from_disk = self._capabilities is not None
            if self._capabilities is None:
                try:
                    self._capabilities = tus.capabilities()
                except DqrxferError as error:
                    log.debug("OPTIONS %s asked early: %s", self.endpoint, error)
                    return False
                self.round_trip = tus.link.round_trip
                if self.remembered is not None:
                    self.remembered.put(self.endpoint, self._capabilities)
            return True

    def refresh(self, tus: TusClient, retrier: Retrier, used: Capabilities) -> Capabilities | None:
        """The server's answer asked again if ``used`` (the capabilities a
        refused request was made with) came from an earlier run; the answer
        another thread got already if it asked meanwhile; None if ``used``
        is fresh (asking again would tell nothing new)."""
        with self._lock:
            if self._capabilities is not used:
                return self._capabilities
            if not self._from_disk:
                return None
            if self.remembered is not None:
                self.remembered.put(self.endpoint, None)
            self._capabilities = None
            self._from_disk = False
            self._capabilities = self._ask(tus, retrier)
            return self._capabilities

    def _ask(self, tus: TusClient, retrier: Retrier) -> Capabilities:
        capabilities = retrier.call(tus.capabilities)
        if self.remembered is not None:
            self.remembered.put(self.endpoint, capabilities)
        return capabilities


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


def stream_count(
    options: UploadOptions, size: int, caps: Capabilities, learnt: LinkRecord | None = None
) -> int:
    """How many partial uploads send a payload of ``size`` bytes at once:
    ``options.parallel``, or with ``parallel`` None (auto) what uploads to
    the server learnt (``learnt``, see :mod:`~dqrxfer.linkmemory`) for a
    payload sent as partial uploads anyway (``overlap_min_size`` or more)."""
    wanted = options.parallel
    if wanted is None:
        if learnt is None or size < options.overlap_min_size or not caps.has("concatenation"):
            return 1
        wanted = learnt.streams()
        if wanted > 1:
            log.debug("%d streams, as learnt from earlier uploads to this server", wanted)
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
