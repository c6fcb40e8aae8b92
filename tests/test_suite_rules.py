"""The suite's own rules: required tests cannot skip in CI, and PostgreSQL is
provided by a throwaway cluster when no server is configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from support.postgres import ThrowawayCluster, server_programs
from support.subpytest import runpytest_with_workers

TESTS = """
import pytest

@pytest.mark.postgres
def test_marked():
    pytest.skip("no server")

@pytest.fixture
def kerberos():
    pytest.skip("no KDC")

def test_through_a_fixture(kerberos):
    pass

def test_optional():
    pytest.skip("nice to have")
"""


#: How the suite runs: in one process, or spread over worker processes
#: (pytest-xdist, as ops/dev/test.sh runs it), whose reports the main process
#: receives after the plugin has turned a required skip into a failure.
WORKERS = [pytest.param([], id="one-process"), pytest.param(["-n", "2"], id="xdist-workers")]


def run_with(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    ci: str | None,
    workers: list[str] | None = None,
) -> pytest.RunResult:
    pytester.makepyfile(TESTS)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    arguments = ["-p", "support.required", "-p", "no:cacheprovider", *(workers or [])]
    if workers:  # workers are processes of their own: the in-process run cannot see them
        return runpytest_with_workers(pytester, monkeypatch, *arguments)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    return pytester.runpytest_inprocess(*arguments)


@pytest.mark.parametrize("workers", WORKERS)
def test_in_ci_a_required_test_that_skips_fails_naming_why(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: list[str]
) -> None:
    result = run_with(pytester, monkeypatch, "true", workers)
    # A skip in the test fails it; one in a fixture's setup is an error.
    result.assert_outcomes(failed=1, errors=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*required test (postgres) skipped with CI set: Skipped: no server*",
            "*required test (kerberos) skipped with CI set: Skipped: no KDC*",
        ]
    )


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_required_tests_skip(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None, workers: list[str]
) -> None:
    run_with(pytester, monkeypatch, ci, workers).assert_outcomes(skipped=3)


@pytest.mark.postgres
def test_a_throwaway_cluster_serves_the_test_database_and_is_removed() -> None:
    programs = server_programs()
    assert programs is not None, "initdb not found: Debian package postgresql"
    cluster = ThrowawayCluster.start(programs)
    try:
        engine = create_engine(cluster.url)
        with engine.connect() as connection:
            assert connection.execute(text("select current_database()")).scalar() == "test"
            assert connection.execute(text("show listen_addresses")).scalar() == "127.0.0.1"
        engine.dispose()
    finally:
        cluster.stop()
    assert not cluster.directory.exists()


SHARED = """
import pytest

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with open({setups!r}, "a") as log:
        log.write("setup\\n")
    return "one server for the module"

@pytest.mark.parametrize("n", range(6))
def test_shares(server, n):
    assert server
"""

ALONE = """
import pytest

@pytest.mark.parametrize("n", range(6))
def test_alone(n):
    pass
"""


def test_under_workers_a_module_sharing_a_fixture_sets_it_up_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    setups = tmp_path / "setups.log"
    pytester.makepyfile(test_shared=SHARED.format(setups=str(setups)), test_alone=ALONE)
    result = runpytest_with_workers(
        pytester, monkeypatch, "-p", "support.parallel", "-n", "3", "-v"
    )
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(["*scheduling tests via ModuleFixtureScheduling*"])
    assert setups.read_text().splitlines() == ["setup"]
    workers_of_alone = {
        line.split("]")[0] for line in result.outlines if "PASSED" in line and "test_alone" in line
    }
    assert len(workers_of_alone) > 1, result.outlines  # the others spread over the workers
