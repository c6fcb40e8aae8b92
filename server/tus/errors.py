"""Protocol errors as values: each carries its HTTP status and a message.

Raised where a problem is detected; the blueprint turns them into responses in
one place (as tusd's ``pkg/handler/error.go`` does).
"""

from __future__ import annotations

import errno


class TusError(Exception):
    """An error answered with ``status`` and a plain-text ``message``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def unsupported_version(supported: str) -> TusError:
    return TusError(
        412,
        f"Tus-Resumable: unsupported or missing protocol version (supported: {supported})",
        {"Tus-Version": supported},
    )


def not_found() -> TusError:
    return TusError(404, "upload not found")


def gone() -> TusError:
    return TusError(410, "upload expired: create a new upload")


def offset_mismatch(expected: int, got: int) -> TusError:
    return TusError(409, f"Upload-Offset: {got} does not match the current offset {expected}")


def bad_header(name: str, rule: str) -> TusError:
    return TusError(400, f"{name}: {rule}")


def too_large(what: str, limit: int) -> TusError:
    return TusError(413, f"{what} exceeds the limit of {limit} bytes")


def over_limit(what: str, rule: str) -> TusError:
    """413 naming the limit that refuses ``what`` (``rule`` names it and its value)."""
    return TusError(413, f"{what}: {rule}")


def wrong_content_type(got: str | None) -> TusError:
    return TusError(
        415, f"Content-Type: must be application/offset+octet-stream (got {got or 'none'!r})"
    )


def locked() -> TusError:
    return TusError(423, "upload is busy: another request is writing to it; retry shortly")


def checksum_mismatch(algorithm: str) -> TusError:
    return TusError(
        460, f"Upload-Checksum: the chunk's {algorithm} digest does not match; chunk discarded"
    )


def block_checksum_mismatch(header: str, what: str, kept: int, offset: int) -> TusError:
    return TusError(
        460,
        f"{header}: {what}; the {kept} bytes of verified blocks before it are kept",
        {"Upload-Offset": str(offset)},
    )


def final_upload_patch() -> TusError:
    return TusError(403, "a final upload of the concatenation extension cannot be patched")


def method_not_allowed(method: str, allowed: str) -> TusError:
    return TusError(405, f"method {method[:20]} not allowed here", {"Allow": allowed})


def body_incomplete(received: int, expected: int | None) -> TusError:
    total = f" of {expected}" if expected is not None else ""
    return TusError(
        400, f"request body ended after {received}{total} bytes; resume from Upload-Offset"
    )


def taken_over(received: int, expected: int | None) -> TusError:
    """The answer to a request whose body fell silent while another request
    asked for its upload (tusd: "upload has been interrupted")."""
    total = f" of {expected}" if expected is not None else ""
    return TusError(
        400,
        f"request body stopped after {received}{total} bytes and another request for this "
        "upload took it over; resume from Upload-Offset",
    )


# -- out of storage space -------------------------------------------------------

#: HTTP status for a full disk (RFC 4918): the client's request was fine.
INSUFFICIENT_STORAGE = 507

_OUT_OF_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: SQLite's primary result code for "database or disk is full" (``SQLITE_FULL``).
_SQLITE_FULL = 13
#: PostgreSQL's SQLSTATE ``disk_full``.
_POSTGRES_DISK_FULL = "53100"


def is_out_of_space(error: BaseException) -> bool:
    """Whether ``error`` says the storage is full: ``ENOSPC``/``EDQUOT`` from
    the kernel, or a database's own "disk full" (SQLite, PostgreSQL), also
    when wrapped (SQLAlchemy's ``orig``, an explicit ``raise ... from``).

    Duck-typed, so the protocol layer imports no database driver.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _OUT_OF_SPACE_ERRNOS:
            return True
        code = getattr(current, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == _SQLITE_FULL:
            return True
        states = (getattr(current, "sqlstate", None), getattr(current, "pgcode", None))
        if _POSTGRES_DISK_FULL in states:
            return True
        wrapped = getattr(current, "orig", None)
        current = wrapped if isinstance(wrapped, BaseException) else current.__cause__
    return False


def out_of_space(consequence: str, headers: dict[str, str] | None = None) -> TusError:
    """507: the server's storage is full; ``consequence`` tells the client
    what became of its request and what to do."""
    return TusError(
        INSUFFICIENT_STORAGE, f"the server is out of storage space: {consequence}", headers
    )


def brief(error: BaseException) -> str:
    """The first line of an error's text, for a one-line log message (a
    database error's text runs over several)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
