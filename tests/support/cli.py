"""Run the project's console scripts (``dqr-upload``, ``dqrxfer-server``, ...) as a user would."""

from __future__ import annotations

import os
import subprocess

from .live import tool


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``args[0]`` (the script beside this interpreter) with the rest as its
    arguments and ``env`` over this process's environment; capture its output."""
    command = [tool(args[0]), *args[1:]]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
