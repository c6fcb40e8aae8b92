"""pytest run in a process of its own over a ``pytester`` directory, for the
tests of the suite's own plugins (``support.required``, ``support.parallel``)."""

from __future__ import annotations

from pathlib import Path

import pytest


def runpytest_with_workers(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *arguments: str
) -> pytest.RunResult:
    """``pytest *arguments`` in a process of its own, with pytest-xdist and the
    plugins named in ``arguments`` only: every installed plugin (hypothesis,
    schemathesis, ...) would cost each of its processes seconds of imports."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    # Worker processes import the plugins too: they find them on PYTHONPATH.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent.parent))
    return pytester.runpytest_subprocess("-p", "xdist", *arguments)
