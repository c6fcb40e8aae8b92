"""A pytest plugin: under pytest-xdist (``ops/dev/test.sh`` runs the suite in
worker processes), a module whose tests share a module- or class-scoped
fixture of its own runs in one worker; every other test goes to whichever
worker is free.

Such a fixture (a live server with the module's configuration, a built
documentation site, a browser) is set up once per worker that runs one of
the module's tests: spread over four workers, the module would start its
server four times.  xdist's own ``--dist loadgroup`` would keep them together
through ``xdist_group`` markers, but it renames node ids in a way pytest 9.2
no longer allows, so the grouping is decided here, in the scheduler, from the
module's source.  Tests share nothing else across processes: free ports,
``tmp_path``, names of their own (``support.live``, ``support.deadhost``,
``support.diskfull``).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

import pytest

#: Scopes whose fixtures, when a test module defines one, keep the module together.
SHARED_SCOPES = ("module", "class")


@functools.cache
def defines_shared_fixture(path: Path) -> bool:
    """Whether the module at ``path`` defines a fixture of a shared scope
    (``@pytest.fixture(scope="module")`` and the like)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return False
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            if not isinstance(decorator, ast.Call):
                continue
            name = decorator.func
            if not (isinstance(name, ast.Attribute | ast.Name) and "fixture" in ast.unparse(name)):
                continue
            for keyword in decorator.keywords:
                value = keyword.value
                constant = value.value if isinstance(value, ast.Constant) else None
                if keyword.arg == "scope" and constant in SHARED_SCOPES:
                    return True
    return False


def work_unit(rootpath: Path, nodeid: str) -> str:
    """The module's node id for a test whose module shares fixtures, else the test's own."""
    module = nodeid.split("::", 1)[0]
    return module if defines_shared_fixture(rootpath / module) else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's ``load`` distribution (its default with ``-n``), the modules above kept whole."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleFixtureScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(config.rootpath, nodeid)

    return ModuleFixtureScheduling(config, log)
