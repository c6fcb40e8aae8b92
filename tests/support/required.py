"""A pytest plugin: with ``CI`` set, a skip of a test that must run there fails it.

Tests that need PostgreSQL, Kerberos, a browser, a front end (Apache/nginx)
or a real full disk skip on a machine without them, saying what to install;
in CI that skip would hide a part that was never tested, so it fails instead.
Tests get their marker from pytest.ini's list or from a fixture they use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

#: Markers of tests that must run in CI: there (``CI`` set) their skip is a failure.
REQUIRED_MARKERS = ("postgres", "kerberos", "browser", "frontend", "diskfull")
#: Fixtures that bring a marker with them, so a test cannot forget it.
MARKER_OF_FIXTURE = {
    "postgres_base_url": "postgres",
    "kerberos": "kerberos",
    "deployment": "frontend",
    "apache_reports": "frontend",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in MARKER_OF_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()) and not item.get_closest_marker(marker):
                item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI, a required test that skipped has failed: the skip says what was missing."""
    report: pytest.TestReport = yield
    required = [name for name in REQUIRED_MARKERS if item.get_closest_marker(name)]
    if report.skipped and required and in_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"required test ({', '.join(required)}) skipped with CI set: {reason}\n"
            "run ops/dev/bootstrap.sh --test to install what it needs"
        )
    return report
