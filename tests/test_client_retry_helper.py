"""The one retry helper every retried request of the client goes through
(:meth:`dqrxfer.retry.Retrier.call`), and the start-over-once path
(:func:`dqrxfer.retry.start_over_once`)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from dqrxfer.errors import GaveUpError, RefusedError, TransientError, UploadGoneError
from dqrxfer.retry import Retrier, RetryPolicy, start_over_once


def flaky(failures: list[Exception], result: str) -> tuple[list[int], Callable[[], str]]:
    """An attempt that raises ``failures`` one by one, then returns ``result``."""
    calls = [0]

    def attempt() -> str:
        calls[0] += 1
        if failures:
            raise failures.pop(0)
        return result

    return calls, attempt


def test_call_retries_transient_errors_until_the_attempt_returns() -> None:
    retrier = Retrier(RetryPolicy(retries=3, wait=0.0), "HEAD")
    calls, attempt = flaky([TransientError("reset"), TransientError("timeout")], "42")
    assert retrier.call(attempt) == "42"
    assert calls == [3]
    assert retrier.total_failures == 2


def test_call_gives_up_when_the_budget_is_spent() -> None:
    retrier = Retrier(RetryPolicy(retries=2, wait=0.0), "POST")
    calls, attempt = flaky([TransientError(f"down {n}") for n in range(5)], "never")
    with pytest.raises(GaveUpError, match=r"POST: gave up after 2 retries: down 2"):
        retrier.call(attempt)
    assert calls == [3]


def test_call_lets_any_other_error_through_at_once() -> None:
    retrier = Retrier(RetryPolicy(retries=5, wait=0.0), "PATCH")
    calls, attempt = flaky([RefusedError(403, "not yours")], "never")
    with pytest.raises(RefusedError, match="not yours"):
        retrier.call(attempt)
    assert calls == [1]
    assert retrier.total_failures == 0


def test_a_lost_upload_is_forgotten_and_made_anew_once(caplog: pytest.LogCaptureFixture) -> None:
    forgotten: list[str] = []
    calls, attempt = flaky([UploadGoneError("the server lost it")], "sent")
    result = start_over_once("report.tar", attempt, lambda: forgotten.append("dropped"))
    assert result == "sent"
    assert calls == [2]
    assert forgotten == ["dropped"]
    assert "the server lost it; starting over" in caplog.text


def test_a_second_loss_gives_up_naming_the_payload() -> None:
    forgotten: list[str] = []
    calls, attempt = flaky([UploadGoneError("gone"), UploadGoneError("gone again")], "never")
    with pytest.raises(GaveUpError, match=r"^report.tar: gone again$") as raised:
        start_over_once("report.tar", attempt, lambda: forgotten.append("dropped"))
    assert calls == [2]
    assert forgotten == ["dropped", "dropped"]
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_start_over_once_leaves_other_errors_and_the_resume_entry_alone() -> None:
    forgotten: list[str] = []
    calls, attempt = flaky([RefusedError(413, "too large")], "never")
    with pytest.raises(RefusedError, match="too large"):
        start_over_once("report.tar", attempt, lambda: forgotten.append("dropped"))
    assert calls == [1]
    assert forgotten == []


class RecordedWaits(threading.Event):
    """The retrier's ``cancel`` event, recording each wait it is asked for
    (and returning at once, not cancelled)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return False


def test_a_lost_connection_is_retried_at_once_and_repeated_failures_back_off() -> None:
    waits = RecordedWaits()
    retrier = Retrier(RetryPolicy(retries=5, wait=2.0), "PATCH", cancel=waits)
    resets = [TransientError(f"PATCH: connection reset {n}") for n in range(4)]
    calls, attempt = flaky(resets, "done")
    assert retrier.call(attempt) == "done"
    assert calls == [5]
    # The first failure of the row: no wait; then 4 s, 8 s, 16 s (each with
    # jitter), as before: a server that stays away is tried as long as ever.
    assert len(waits.waits) == 3, waits.waits
    for wait, base in zip(waits.waits, (4.0, 8.0, 16.0), strict=True):
        assert base / 2 <= wait <= base, waits.waits


def test_progress_makes_the_next_reset_go_at_once_again() -> None:
    waits = RecordedWaits()
    retrier = Retrier(RetryPolicy(retries=5, wait=2.0), "PATCH", cancel=waits)
    retrier.failed(TransientError("PATCH: connection reset"))
    retrier.failed(TransientError("HEAD: timed out"))
    retrier.progress()
    retrier.failed(TransientError("PATCH: connection reset"))
    assert len(waits.waits) == 1 and 2.0 <= waits.waits[0] <= 4.0, waits.waits


def test_a_stale_offset_is_retried_at_once() -> None:
    waits = RecordedWaits()
    retrier = Retrier(RetryPolicy(retries=3, wait=2.0), "PATCH", cancel=waits)
    retrier.failed(TransientError("PATCH: offset 5 is not 7", 409))
    assert waits.waits == []


def test_a_busy_or_failing_server_is_given_a_wait_from_the_first_failure() -> None:
    waits = RecordedWaits()
    retrier = Retrier(RetryPolicy(retries=3, wait=2.0), "POST", cancel=waits)
    calls, attempt = flaky([TransientError("busy", 503), TransientError("busy", 429)], "made")
    assert retrier.call(attempt) == "made"
    assert calls == [3]
    assert len(waits.waits) == 2, waits.waits
    assert 1.0 <= waits.waits[0] <= 2.0 and 2.0 <= waits.waits[1] <= 4.0, waits.waits
