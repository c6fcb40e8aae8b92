"""How long the client waits: for a connection (and each send) and for an answer.

Its own module, free of the HTTP stack, so that a command can build its
option parser without importing ``requests`` (see :mod:`dqrxfer.cli.upload`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a connection (and for each send) and for an answer.

    The read timeout must cover the server's work on the last chunk of an
    upload (hashing and publishing the payload), hence its generous default.
    """

    connect: float = 20.0
    read: float = 120.0

    def as_requests(self) -> tuple[float, float]:
        return (self.connect, self.read)
