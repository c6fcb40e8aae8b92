"""Bounded retrying: exponential backoff with jitter, a failure budget and a deadline.

A :class:`Retrier` counts *consecutive* failures: any progress (the server's
offset moved) resets the count, so a link that drops every few megabytes
still finishes, while a server that stays down is given up on after
``retries`` attempts.  The overall ``deadline`` bounds the whole transfer
whatever happens.

Every request of the client that is retried goes through :meth:`Retrier.call`
(a :class:`~dqrxfer.errors.TransientError` waits and tries again, anything
else goes up at once); :func:`start_over_once` is the other half of the
policy: an upload the server no longer has is forgotten and made anew, once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import GaveUpError, TransientError, UploadGoneError

log = logging.getLogger("dqr-xfer")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` failures in a row are allowed; the n-th is followed by a
    wait of ``wait * 2**(n-1)`` seconds (at most ``max_wait``), each drawn
    between half and all of that (jitter, so that many clients cut off
    together do not come back together); but the first failure of a row
    that is retried at once (``at_once``) waits nothing, the waits of the
    failures after it being unchanged: the time a server that stays away is
    tried for stays the same.  ``deadline`` (seconds, None for none) bounds
    one payload's whole transfer."""

    retries: int = 8
    wait: float = 2.0
    max_wait: float = 300.0
    deadline: float | None = 6 * 3600.0

    def delay(self, failure: int, rng: random.Random | None = None, at_once: bool = False) -> float:
        if at_once and failure <= 1:
            return 0.0
        base = min(self.max_wait, self.wait * 2.0 ** max(0, failure - 1))
        uniform = rng.uniform if rng is not None else random.uniform
        return base * uniform(0.5, 1.0)


def retry_at_once(error: Exception) -> bool:
    """True for a failure worth retrying without a wait when it is the first
    in a row: the connection was lost (reset, time-out: no HTTP status) or
    the server's offset was not ours (409, after a cut request).  A server
    that answered it is busy or failing (5xx, 423, 429) is given a wait."""
    status = getattr(error, "status", None)
    return status is None or status == 409


class Retrier:
    """The retry state of one piece of work (one payload's transfer).

    ``cancel`` (an Event) lets another thread stop the waits early: the next
    :meth:`failed` raises instead of sleeping.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        what: str,
        cancel: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.what = what
        self.cancel = cancel or threading.Event()
        self.clock = clock
        self.started = clock()
        self.failures = 0
        self.total_failures = 0
        #: Whether the first failure of the current row was retried at once.
        self.first_at_once = False

    def remaining(self) -> float | None:
        if self.policy.deadline is None:
            return None
        return self.policy.deadline - (self.clock() - self.started)

    def progress(self) -> None:
        """The work moved forward: the failure budget starts again."""
        self.failures = 0

    def failed(self, error: Exception) -> None:
        """Wait before the next attempt, or raise :class:`GaveUpError`."""
        self.failures += 1
        self.total_failures += 1
        if self.cancel.is_set():
            raise GaveUpError(f"{self.what}: stopped: {error}") from error
        if self.failures > self.policy.retries:
            raise GaveUpError(
                f"{self.what}: gave up after {self.policy.retries} retries: {error}"
            ) from error
        if self.failures == 1:
            self.first_at_once = retry_at_once(error)
        delay = self.policy.delay(self.failures, at_once=self.first_at_once)
        remaining = self.remaining()
        if remaining is not None and remaining < delay:
            raise GaveUpError(
                f"{self.what}: gave up: the deadline of {self.policy.deadline:.0f}s "
                f"is reached: {error}"
            ) from error
        log.warning(
            "%s: %s; retry %d of %d in %.1fs",
            self.what,
            error,
            self.failures,
            self.policy.retries,
            delay,
        )
        if delay and self.cancel.wait(delay):
            raise GaveUpError(f"{self.what}: stopped: {error}") from error

    def call(self, attempt: Callable[[], T]) -> T:
        """``attempt()`` again after each :class:`TransientError` (waiting as
        :meth:`failed` says, or giving up), until it returns."""
        while True:
            try:
                return attempt()
            except TransientError as error:
                self.failed(error)


def start_over_once(what: str, attempt: Callable[[], T], forget: Callable[[], None]) -> T:
    """``attempt()``; if the server lost the upload it was sending
    (:class:`UploadGoneError`), ``forget()`` it and run ``attempt()`` once more
    (which makes a new upload).  A second loss gives up (:class:`GaveUpError`,
    after ``forget()`` too)."""
    for last in (False, True):
        try:
            return attempt()
        except UploadGoneError as error:
            forget()
            if last:
                raise GaveUpError(f"{what}: {error}") from None
            log.warning("%s; starting over", error)
    raise AssertionError("unreachable")  # pragma: no cover
