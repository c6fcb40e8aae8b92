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
"""

from __future__ import annotations


class DqrxferError(Exception):
    exit_code = 1


class UsageError(DqrxferError):
    exit_code = 2


class AuthenticationError(DqrxferError):
    exit_code = 3


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
