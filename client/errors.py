"""Client errors, each with the exit code the CLIs map it to (at the edge only).

=====  ==========================================================
code   meaning
=====  ==========================================================
0      done
2      usage: bad options or unreadable input
3      authentication: no ticket, expired, refused
4      refused by the server (validation, authorization, checksum)
5      gave up after retries (worth a condor retry)
=====  ==========================================================

When several payloads fail differently, the CLIs exit with the most telling
code: 3 before 4 before 5 before 2 (see :func:`worst_exit_code`).
"""

from __future__ import annotations

from collections.abc import Iterable


class DqrxferError(Exception):
    exit_code = 1


class UsageError(DqrxferError):
    exit_code = 2


class PayloadChangedError(UsageError):
    """A file changed while it was being hashed or sent: the bytes on the
    server would not match what was hashed."""


class AuthenticationError(DqrxferError):
    exit_code = 3


class SessionExpired(AuthenticationError):
    """The server no longer accepted the session cookie of a request whose body
    cannot be sent twice.  Nothing was resent; a new request authenticates
    afresh (the cookie is gone from the session)."""


class RefusedError(DqrxferError):
    """The server answered with a 4xx: retrying the same request cannot help."""

    exit_code = 4

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server refused ({status}): {message}")
        self.status = status
        self.server_message = message


class GaveUpError(DqrxferError):
    """Connection errors, time-outs or 5xx persisted through every retry."""

    exit_code = 5


class TransientError(DqrxferError):
    """One attempt failed in a way that a later attempt may not (connection
    lost, time-out, 5xx, busy).  Caught by the retry loops; if one escapes
    them it means the same as :class:`GaveUpError`."""

    exit_code = 5

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UploadGoneError(DqrxferError):
    """The server no longer knows an upload (404/410): start it over."""

    exit_code = 5


class BusyError(DqrxferError):
    """Another process is sending the same payload to the same place."""

    exit_code = 5


_PRECEDENCE = (3, 4, 5, 2, 1)


def worst_exit_code(codes: Iterable[int]) -> int:
    """The exit code that tells most about several outcomes (0 if all are 0)."""
    failed = {code for code in codes if code}
    for code in _PRECEDENCE:
        if code in failed:
            return code
    return max(failed, default=0)
