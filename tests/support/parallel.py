"""A pytest plugin: under pytest-xdist (``ops/dev/test.sh`` runs the suite in
worker processes), a module whose tests share a module- or class-scoped
fixture of its own runs in one worker; every other test goes to whichever
worker is free; and the longest work goes first.

Such a fixture (a live server with the module's configuration, a built
documentation site, a browser) is set up once per worker that runs one of
the module's tests: spread over four workers, the module would start its
server four times.  xdist's own ``--dist loadgroup`` would keep them together
through ``xdist_group`` markers, but it renames node ids in a way pytest 9.2
no longer allows, so the grouping is decided here, in the scheduler, from the
module's source.  Tests share nothing else across processes: free ports,
``tmp_path``, names of their own (``support.live``, ``support.deadhost``,
``support.diskfull``).

**Longest first.**  The suite ends when its last worker does: a long module
handed out last keeps one worker busy while the others wait.  So the work
units (a whole module, or one test) are handed out longest first, by the
seconds each test took in an earlier run, kept in ``tests/durations.json``
(:data:`DURATIONS`; a test not in it counts :data:`UNKNOWN_SECONDS`).  The
file is refreshed with ``bash ops/dev/test.sh --update-durations`` (or any
``pytest ... --update-durations`` run: the tests it ran are updated, the
others kept, those of deleted files dropped).  A stale file only costs time,
never a result: the order of work units does not change what each test does.
"""

from __future__ import annotations

import ast
import functools
import json
import os
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any

import pytest

#: Scopes whose fixtures, when a test module defines one, keep the module together.
SHARED_SCOPES = ("module", "class")

#: Seconds each test took (setup, call and teardown), by node id, under the rootdir.
DURATIONS = Path("tests") / "durations.json"

#: Seconds counted for a test the durations file does not know (a new one).
UNKNOWN_SECONDS = 1.0


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


def load_durations(path: Path) -> dict[str, float]:
    """The durations file at ``path``; empty if there is none (or it is unreadable:
    the order then falls back to xdist's, the most tests first)."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {str(k): float(v) for k, v in loaded.items() if isinstance(v, int | float)}


def longest_first(
    workqueue: OrderedDict[str, dict[str, bool]], durations: dict[str, float]
) -> OrderedDict[str, dict[str, bool]]:
    """The work units of ``workqueue`` (unit -> its tests' node ids), longest
    first; units of equal length keep their order."""

    def seconds(unit: tuple[str, dict[str, bool]]) -> float:
        return sum(durations.get(nodeid, UNKNOWN_SECONDS) for nodeid in unit[1])

    return OrderedDict(sorted(workqueue.items(), key=seconds, reverse=True))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-durations",
        action="store_true",
        help=f"record each test's duration in {DURATIONS} (the order of work under -n)",
    )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's ``load`` distribution (its default with ``-n``), the modules above
    kept whole, the longest work units first."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    durations = load_durations(config.rootpath / DURATIONS)

    class ModuleFixtureScheduling(LoadScopeScheduling):  # type: ignore[misc]
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            return work_unit(config.rootpath, nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            # The queue is complete when the first unit is handed out.
            if not self.ordered:
                self.workqueue = longest_first(self.workqueue, durations)
                self.ordered = True
            super()._assign_work_unit(node)

    return ModuleFixtureScheduling(config, log)


class DurationRecorder:
    """Sums each test's setup, call and teardown; writes them into the
    durations file at the end of the session (the main process only)."""

    def __init__(self, path: Path, rootpath: Path) -> None:
        self.path = path
        self.rootpath = rootpath
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] += report.duration

    def pytest_sessionfinish(self) -> None:
        if not self.seconds:
            return
        durations = load_durations(self.path)
        durations.update(self.seconds)
        kept = {
            nodeid: round(seconds, 2)
            for nodeid, seconds in sorted(durations.items())
            if (self.rootpath / nodeid.split("::", 1)[0]).is_file()
        }
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(kept, handle, indent=0, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)


def pytest_configure(config: pytest.Config) -> None:
    is_worker = hasattr(config, "workerinput")
    if config.getoption("update_durations") and not is_worker:
        recorder = DurationRecorder(config.rootpath / DURATIONS, config.rootpath)
        config.pluginmanager.register(recorder, "dqrxfer-durations")
