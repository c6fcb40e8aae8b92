"""A gunicorn configuration file: the access log of :mod:`request_log` on a
server that hides the extensions ``$DQRXFER_TEST_HIDDEN_EXTENSIONS`` names,
as :mod:`no_concatenation` does (a standard tus server, as far as a client
can tell).  For tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _load(name: str) -> ModuleType:
    qualified = f"dqrxfer_test_{name}"
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(qualified, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


access_log_format = _load("request_log").access_log_format
post_worker_init = _load("no_concatenation").post_worker_init
