"""The one retry helper every retried request of the client goes through
(:meth:`dqrxfer.retry.Retrier.call`), and the start-over-once path
(:func:`dqrxfer.retry.start_over_once`)."""

from __future__ import annotations

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
