"""Where CRC-32 is expected from ISA-L (the ``isal`` package) rather than zlib."""

from __future__ import annotations

import importlib.util
import platform

import pytest

#: The machines pyproject.toml installs isal on (those it has wheels for).
MACHINES = ("x86_64", "aarch64", "arm64", "AMD64")


def require_isal() -> None:
    """Skip the calling test where zlib's CRC-32 is used by design: a machine
    without ISA-L wheels, or an environment made before the dependency."""
    if platform.machine() not in MACHINES:
        pytest.skip("no ISA-L wheels for this machine: zlib's CRC-32 is used")
    if importlib.util.find_spec("isal") is None:
        pytest.skip("isal is not installed here: pip install -e . installs it")
