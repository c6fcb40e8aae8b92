"""Settings of the suite's hypothesis state machines."""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def bounded(max_examples: int, steps: int, *suppressed: HealthCheck) -> settings:
    """A run bounded for CI: ``max_examples`` sequences of up to ``steps``
    steps, the same on every run (``derandomize``, no example database), no
    deadline (a step does real work on disk), ``too_slow`` and ``suppressed``
    health checks off."""
    return settings(
        max_examples=max_examples,
        stateful_step_count=steps,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, *suppressed],
    )
