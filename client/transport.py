"""The tus 1.0.0 protocol, client side, over a :class:`requests.Session`.

One method per request (OPTIONS, POST, HEAD, PATCH, DELETE).  Each either
returns what the protocol says it returns or raises one of the client errors,
classified here and only here:

====================================  ===================================
answer                                raised
====================================  ===================================
connection error, time-out            :class:`TransientError`
5xx, 423 Locked, 429, 460 checksum    :class:`TransientError` (retry)
409 on PATCH (offset moved)           :class:`OffsetConflict` (re-sync)
404 / 410 for an upload URL           :class:`UploadGoneError` (start over)
400 to a PATCH whose body the server  :class:`TransientError` (resume from
stopped reading (cut, or another      the server's offset)
request for the upload took it over)
401                                   :class:`AuthenticationError`
404, 405, 410, 501, no ``Tus-Version``  :class:`NotAServerError` (usage:
to OPTIONS                            the URL is not a dqrxfer server's)
any other 4xx                         :class:`RefusedError` with the
                                      server's message
====================================  ===================================

The errors' messages are in the user's words and name the server (``cannot
reach https://...``); the request and the answer (method, URL, status, a web
server's error page, the exception) go to the debug log.

Request bodies are :class:`SliceBody` objects: a byte range of a payload
with a length (so requests sends ``Content-Length``), re-iterable: if an auth
handler re-sends the request after a 401, the whole range goes out again
instead of an empty body.  Through a session whose adapter sends file
regions (:mod:`dqrxfer.sendfile`, the default), the file content of the range
goes out with ``sendfile``; otherwise it is read from disk block by block
while it is sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload
from urllib.parse import urljoin, urlsplit

import requests

from .blocks import HEADER as BLOCK_HEADER
from .errors import (
    AuthenticationError,
    RefusedError,
    SessionExpired,
    TransientError,
    UploadGoneError,
    UsageError,
)
from .payload import Payload
from .pieces import LinkEstimate
from .regions import FileRegion
from .sendfile import sends_regions

log = logging.getLogger("dqr-xfer")

TUS_VERSION = "1.0.0"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
#: Small pieces (tar headers, small files) are gathered to at least this
#: many bytes before each socket send.
MIN_SEND = 256 * 1024
#: File regions are handed to the connection in pieces of at most this many
#: bytes (progress moves per piece).
REGION_PIECE = 4 * 1024 * 1024
MAX_MESSAGE = 1000

T = TypeVar("T", bytes, FileRegion)


class OffsetConflict(TransientError):
    """409: the server's offset is not the one we sent (ask it again)."""


@dataclass(frozen=True)
class Capabilities:
    """What a server said about itself in answer to OPTIONS."""

    versions: tuple[str, ...]
    extensions: frozenset[str]
    checksum_algorithms: tuple[str, ...] = ()
    max_size: int | None = None

    def has(self, extension: str) -> bool:
        return extension in self.extensions


@dataclass(frozen=True)
class Created:
    url: str
    offset: int
    headers: Mapping[str, str]
    #: Bytes of the upload the creation request carried (creation-with-upload).
    carried: int = 0


@dataclass(frozen=True)
class Status:
    offset: int | None
    length: int | None


def encode_metadata(metadata: Mapping[str, str]) -> str:
    import base64

    parts = []
    for key, value in metadata.items():
        if not key or any(c in key for c in " ,") or not key.isascii():
            raise ValueError(f"Upload-Metadata key {key!r} is not allowed")
        parts.append(f"{key} {base64.b64encode(value.encode('utf-8')).decode('ascii')}")
    return ",".join(parts)


def server_message(response: requests.Response) -> str:
    """The server's explanation: the JSON ``error`` or the text body, shortened;
    for an HTML page (a web server's error page, not dqrxfer's answer) only
    the status's reason, the page itself being logged at debug level."""
    text = ""
    content_type = response.headers.get("Content-Type", "")
    if "html" in content_type:
        log.debug("HTTP %d page from %s: %s", response.status_code, response.url, response.text)
        return response.reason or f"HTTP {response.status_code}"
    try:
        if "json" in content_type:
            data = response.json()
            if isinstance(data, dict):
                text = str(data.get("error") or data.get("message") or "")
    except ValueError:
        pass
    if not text:
        text = response.text.strip() if response.content else ""
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    return text or (response.reason or f"HTTP {response.status_code}")


#: How tus servers say that they stopped reading a PATCH's body part way and
#: kept what arrived (dqrxfer: a body that ended early, or fell silent while
#: another request for the upload took it over; tusd: ERR_UPLOAD_INTERRUPTED).
#: The client's own later request can cause the second: an earlier PATCH the
#: link held back is answered once the retry asks for the upload.
_BODY_STOPPED = ("resume from Upload-Offset", "ERR_UPLOAD_INTERRUPTED")


def body_stopped(status: int, message: str) -> bool:
    """Whether an answer to a PATCH says that its body was stopped part way
    (what arrived is kept: the upload goes on from the server's offset)."""
    return status == 400 and any(sign in message for sign in _BODY_STOPPED)


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 423, 429, 460)


def check_response(response: requests.Response, what: str, upload: bool = False) -> None:
    """Raise the client error that an unsuccessful answer means (see the module
    doc), in the user's words; ``what`` (the request) is logged at debug level."""
    status = response.status_code
    if 200 <= status < 300:
        return
    message = server_message(response)
    log.debug("%s %s: HTTP %d: %s", what, response.url, status, message)
    if status == 401:
        raise AuthenticationError(
            f"the server refused the credentials (401): {message}. "
            "Check your Kerberos ticket (klist) or keytab"
        )
    if upload and status in (404, 410):
        raise UploadGoneError(f"the server no longer has this upload ({status}): {message}")
    if upload and status == 409:
        raise OffsetConflict(
            f"the server holds another offset than expected (409): {message}", status
        )
    if upload and body_stopped(status, message):
        raise TransientError(f"the server stopped reading the piece ({status}): {message}", status)
    if status == 460:
        raise TransientError(f"a piece arrived damaged (checksum mismatch, 460): {message}", status)
    if status in (423, 429):
        raise TransientError(f"the server is busy ({status}): {message}", status)
    if status == 408:
        raise TransientError(
            f"the server timed out waiting for the request (408): {message}", status
        )
    if _retryable(status):
        raise TransientError(f"server error ({status}): {message}", status)
    if 400 <= status < 500:
        raise RefusedError(status, message)
    raise TransientError(f"unexpected answer from the server ({status}): {message}", status)


def check_api_response(response: requests.Response, server: str, what: str) -> Any:
    """The JSON body of an answer of the server's API (``what``: the request's
    method, for the debug log), or the client error it means: :func:`check_response`'s, but
    a 404 or an answer that is not JSON means that ``server`` is not a
    dqrxfer server (a wrong path in the URL, another web site)."""
    if response.status_code == 404:
        server_message(response)  # logs the page at debug level
        log.debug("%s %s: HTTP 404", what, response.url)
        raise NotAServerError(server, "404")
    check_response(response, what)
    try:
        return response.json()
    except ValueError:
        log.debug("%s %s: not JSON: %.500s", what, response.url, response.text)
        raise NotAServerError(server, "its answer is not dqrxfer's") from None


class NotAServerError(UsageError):
    """The server URL answers, but not as a dqrxfer server does (a wrong path,
    another web site): a usage error, not worth a retry."""

    def __init__(self, server: str, why: str) -> None:
        super().__init__(f"{server} is not a dqrxfer server ({why}): check -s/--server")


class SliceBody:
    """Bytes ``[start, end)`` of a payload as a streamed, re-iterable request body.

    With ``regions`` the file content comes as :class:`FileRegion` pieces (for
    a connection that sends them with ``sendfile``), else as bytes read from
    disk.  ``on_send`` is told the size of every piece handed to the
    connection (progress and the count of bytes put on the wire).
    """

    def __init__(
        self,
        payload: Payload,
        start: int,
        end: int,
        on_send: Callable[[int], None] | None = None,
        regions: bool = False,
    ) -> None:
        self.payload = payload
        self.start = start
        self.end = end
        self.on_send = on_send
        self.regions = regions
        self.sent = 0

    def __len__(self) -> int:
        return self.end - self.start

    def _emit(self, piece: T) -> T:
        size = len(piece)
        self.sent += size
        if self.on_send is not None:
            self.on_send(size)
        return piece

    def __iter__(self) -> Iterator[bytes | FileRegion]:
        return self._regions() if self.regions else self._blocks()

    def _gathered(self, pending: bytearray, at_least: int = 1) -> Iterator[bytes]:
        """The bytes gathered in ``pending`` as one piece, if there are at
        least ``at_least`` of them (``pending`` is emptied then)."""
        if len(pending) >= at_least:
            yield self._emit(bytes(pending))
            pending.clear()

    def _blocks(self) -> Iterator[bytes]:
        pending = bytearray()
        for block in self.payload.blocks(self.start, self.end):
            if not pending and len(block) >= MIN_SEND:
                yield self._emit(block)
                continue
            pending += block
            yield from self._gathered(pending, MIN_SEND)
        yield from self._gathered(pending)

    def _regions(self) -> Iterator[bytes | FileRegion]:
        pending = bytearray()
        for piece in self.payload.regions(self.start, self.end):
            if isinstance(piece, FileRegion) and len(piece) >= MIN_SEND:
                yield from self._gathered(pending)
                for part in piece.split(REGION_PIECE):
                    yield self._emit(part)
                continue
            for block in piece if isinstance(piece, FileRegion) else (piece,):
                pending += block
            yield from self._gathered(pending, MIN_SEND)
        yield from self._gathered(pending)


class GatedBody(SliceBody):
    """A :class:`SliceBody` whose bytes from ``hold`` on are sent only once
    ``wait()`` returns (an exception it raises ends the request)."""

    def __init__(
        self,
        payload: Payload,
        start: int,
        end: int,
        hold: int,
        wait: Callable[[], None],
        on_send: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(payload, start, end, on_send)
        self.hold = hold
        self.wait = wait

    def __iter__(self) -> Iterator[bytes | FileRegion]:
        before = SliceBody(self.payload, self.start, self.hold, self.on_send, self.regions)
        yield from before
        self.wait()
        after = SliceBody(self.payload, self.hold, self.end, self.on_send, self.regions)
        yield from after


class TusClient:
    """Requests to one tus endpoint (``<server>/files/``) through ``session``."""

    def __init__(
        self, session: requests.Session, endpoint: str, link: LinkEstimate | None = None
    ) -> None:
        self.session = session
        self.endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        self.headers = {"Tus-Resumable": TUS_VERSION}
        #: The link's round trip and rate, as this client's requests find them.
        self.link = link or LinkEstimate()

    def on_same_link(self, session: requests.Session) -> TusClient:
        """A client for another connection (``session``) of the same upload:
        the round trips its requests find are this client's too
        (:meth:`LinkEstimate.on_same_link`)."""
        return TusClient(session, self.endpoint, self.link.on_same_link())

    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        began = time.monotonic()
        try:
            response = self.session.request(method, url, headers=headers, **kwargs)
            if "data" not in kwargs:
                self.link.saw_answer(time.monotonic() - began)
            return response
        except (
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidURL,
        ) as error:
            # A server URL no request can go to (given through the API: the
            # commands check theirs first): retrying cannot help.
            log.debug("%s %s: %r", method, url, error)
            raise UsageError(
                f"server URL {self.server!r}: not an http(s) URL with a host"
            ) from error
        except requests.RequestException as error:
            log.debug("%s %s: %r", method, url, error)
            raise TransientError(describe_error(error, url)) from error
        except SessionExpired as error:
            # The session cookie expired under a streamed body, which the
            # auth handler does not resend; a new request authenticates afresh.
            log.debug("%s %s: %s", method, url, error)
            raise TransientError("the login session expired; logging in again") from error

    @property
    def server(self) -> str:
        """The server URL this endpoint belongs to (``<server>/files/``)."""
        return self.endpoint.removesuffix("/").removesuffix("/files")

    def capabilities(self) -> Capabilities:
        response = self._request("OPTIONS", self.endpoint, "OPTIONS")
        headers = response.headers
        if response.status_code in (404, 405, 410, 501) or (
            response.ok and not headers.get("Tus-Version")
        ):
            server_message(response)  # logs what the answer was, at debug level
            log.debug("OPTIONS %s: HTTP %d without tus", self.endpoint, response.status_code)
            why = str(response.status_code) if not response.ok else "it does not take uploads"
            raise NotAServerError(self.server, why)
        check_response(response, "OPTIONS")
        extensions = _split(headers.get("Tus-Extension", ""))
        max_size = headers.get("Tus-Max-Size")
        return Capabilities(
            versions=tuple(_split(headers.get("Tus-Version", ""))),
            extensions=frozenset(extensions),
            checksum_algorithms=tuple(_split(headers.get("Tus-Checksum-Algorithm", ""))),
            max_size=int(max_size) if max_size and max_size.isdigit() else None,
        )

    def create(
        self,
        length: int | None,
        metadata: Mapping[str, str] | None = None,
        concat: str | None = None,
        body: SliceBody | None = None,
        checksum: str | None = None,
        block_checksum: str | None = None,
    ) -> Created:
        """POST a new upload; with ``body`` (creation-with-upload) carrying
        the upload's first bytes, checked as a PATCH's are (``checksum``,
        ``block_checksum``)."""
        headers: dict[str, str] = {}
        extra: dict[str, Any] = {}
        if length is not None:
            headers["Upload-Length"] = str(length)
        if metadata:
            headers["Upload-Metadata"] = encode_metadata(metadata)
        if concat is not None:
            headers["Upload-Concat"] = concat
        if body is not None:
            headers["Content-Type"] = OFFSET_CONTENT_TYPE
            if checksum:
                headers["Upload-Checksum"] = checksum
            if block_checksum:
                headers[BLOCK_HEADER] = block_checksum
            body.regions = sends_regions(self.session, self.endpoint)
            extra["data"] = body
        response = self._request(
            "POST", self.endpoint, "create upload", headers=headers, allow_redirects=False, **extra
        )
        check_response(response, "create upload")
        location = response.headers.get("Location")
        if response.status_code != 201 or not location:
            log.debug(
                "POST %s: HTTP %d, Location %r", self.endpoint, response.status_code, location
            )
            raise TransientError(
                f"the server did not create the upload ({response.status_code})",
                response.status_code,
            )
        offset = _int_header(response, "Upload-Offset", 0)
        carried = body.sent if body is not None else 0
        return Created(urljoin(self.endpoint, location), offset, dict(response.headers), carried)

    def status(self, url: str, final: bool = False) -> Status:
        """HEAD: the upload's offset and length.  A ``final`` upload of the
        concatenation extension has no offset until its partial uploads are
        all finished (``offset`` None)."""
        response = self._request("HEAD", url, "HEAD", allow_redirects=False)
        check_response(response, "HEAD", upload=True)
        offset = _int_header(response, "Upload-Offset", None)
        if offset is None and not final:
            log.debug("HEAD %s: answer without Upload-Offset", url)
            raise TransientError("the server did not say how much of the upload it holds")
        return Status(offset, _int_header(response, "Upload-Length", None))

    def patch(
        self,
        url: str,
        offset: int,
        body: SliceBody,
        checksum: str | None = None,
        block_checksum: str | None = None,
    ) -> requests.Response:
        """PATCH ``body`` at ``offset``, with ``checksum`` (``Upload-Checksum``)
        or ``block_checksum`` (``Upload-Block-Checksum``, see :mod:`~dqrxfer.blocks`)."""
        headers = {"Upload-Offset": str(offset), "Content-Type": OFFSET_CONTENT_TYPE}
        if checksum:
            headers["Upload-Checksum"] = checksum
        if block_checksum:
            headers[BLOCK_HEADER] = block_checksum
        body.regions = sends_regions(self.session, url)
        response = self._request(
            "PATCH", url, "PATCH", data=body, headers=headers, allow_redirects=False
        )
        check_response(response, "PATCH", upload=True)
        return response

    def terminate(self, url: str) -> None:
        response = self._request("DELETE", url, "DELETE", allow_redirects=False)
        if response.status_code not in (404, 410):
            check_response(response, "DELETE", upload=True)


def new_offset(response: requests.Response) -> int:
    offset = _int_header(response, "Upload-Offset", None)
    if offset is None:
        log.debug("PATCH: HTTP %d without Upload-Offset", response.status_code)
        raise TransientError("the server did not say how much of the upload it holds")
    return offset


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@overload
def _int_header(response: requests.Response, name: str, default: int) -> int: ...
@overload
def _int_header(response: requests.Response, name: str, default: None) -> int | None: ...
def _int_header(response: requests.Response, name: str, default: int | None) -> int | None:
    value = response.headers.get(name)
    if value is None or not value.strip().isdigit():
        return default
    return int(value)


def describe_error(error: requests.RequestException, url: str | None = None) -> str:
    """A one-line reason for a failed request, in the user's words, naming
    the server (scheme and host of ``url``); the exception itself is for the
    debug log."""
    where = _origin(url or getattr(error.request, "url", None) or "")
    server = where or "the server"
    if isinstance(error, requests.ConnectTimeout):
        return f"cannot reach {server} (timed out)"
    if isinstance(error, requests.Timeout):
        return f"{server} did not answer in time (timed out)"
    if isinstance(error, requests.exceptions.SSLError):
        text = str(error)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return (
                f"cannot reach {server} securely: its certificate is not trusted "
                "(REQUESTS_CA_BUNDLE names the CA bundle)"
            )
        return f"cannot reach {server} securely (TLS failed)"
    if isinstance(error, requests.ConnectionError):
        text = str(error)
        if "Name or service not known" in text or "nodename nor servname" in text:
            return f"cannot reach {server} (unknown host name)"
        if "Connection refused" in text:
            return f"cannot reach {server} (connection refused)"
        for marker in ("Connection reset", "Broken pipe", "timed out"):
            if marker in text:
                return f"lost the connection to {server} ({marker.lower()})"
        return f"lost the connection to {server}"
    if isinstance(
        error,
        requests.exceptions.InvalidSchema
        | requests.exceptions.MissingSchema
        | requests.exceptions.InvalidURL,
    ):
        return f"{url or 'the URL'} is not an http(s) URL with a host"
    return f"lost the connection to {server}"


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` ('' if it has none)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
