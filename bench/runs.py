"""A command-line client run as its own process, as users run it (start-up
included): wall time, and from ``wait4`` its peak resident memory and CPU time."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CliRun:
    seconds: float
    rss: int  # peak resident memory, bytes
    cpu: float  # user + system seconds of the process
    stderr: str


def timed_run(command: list[str], env: dict[str, str]) -> CliRun:
    """Run ``command`` with ``env`` (the whole environment), its output
    discarded and its stderr kept; raise if it fails."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if process.returncode != 0:
        name = Path(command[0]).name
        raise RuntimeError(f"{name} exited with {process.returncode}:\n{stderr}")
    return CliRun(elapsed, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime, stderr)
