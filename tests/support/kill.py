"""Killing a command-line client at a chosen moment, to test what a re-run
resumes."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable

from .cli import run_cli
from .faultproxy import FaultProxy, Faults
from .live import tool
from .tus import wait_for


def kill_when(
    args: list[str],
    env: dict[str, str],
    condition: Callable[[], object],
    what: str,
    timeout: float = 120,
) -> None:
    """Run ``args`` (a console script and its arguments) with ``env`` added to
    the environment, and SIGKILL it once ``condition()`` holds.

    Fails, with the client's stderr, if it ends by itself before; fails if
    ``what`` does not come within ``timeout`` seconds (the client is killed
    then too: nothing is left running)."""
    process = subprocess.Popen(
        [tool(args[0]), *args[1:]],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def reached() -> bool:
        assert process.poll() is None, process.communicate()[1]
        return bool(condition())

    try:
        # Polled often: the condition is a point in a transfer that goes on.
        wait_for(reached, timeout, interval=0.005, what=what)
    finally:
        process.kill()  # no-op where it ended by itself
        process.wait(timeout=30)
        process.stderr.close()  # type: ignore[union-attr]
    assert process.returncode == -signal.SIGKILL


def rerun_resumes(
    proxy: FaultProxy, args: list[str], env: dict[str, str], size: int
) -> subprocess.CompletedProcess[str]:
    """Run the killed command ``args`` again through ``proxy``, its faults
    cleared: it succeeds, resumes ``big.bin`` and sends at most 55 % of its
    ``size`` bytes (what the server kept is not sent again)."""
    proxy.faults = Faults()
    proxy.reset_counters()
    result = run_cli(*args, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "INFO:dqr-xfer:Resuming big.bin at" in result.stderr
    assert proxy.counters.up_bytes <= 0.55 * size, proxy.counters
    return result
