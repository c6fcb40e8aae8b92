"""The order of work under pytest-xdist (support.parallel): the longest work
units first, by the durations an earlier run recorded with ``--update-durations``."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest

from support.parallel import UNKNOWN_SECONDS, longest_first
from support.subpytest import runpytest_with_workers

QUICK = """
import pytest

@pytest.mark.parametrize("n", range(3))
def test_quick(n):
    pass
"""

SLOW = """
def test_slow():
    pass
"""


def test_work_units_are_ordered_by_the_sum_of_their_tests_durations() -> None:
    queue = OrderedDict(
        [
            ("a.py::one", {"a.py::one": False}),
            ("b.py", {"b.py::x": False, "b.py::y": False}),
            ("c.py::new", {"c.py::new": False}),
            ("d.py::two", {"d.py::two": False}),
        ]
    )
    durations = {"a.py::one": 0.5, "b.py::x": 2.0, "b.py::y": 3.0, "d.py::two": 0.5}
    ordered = longest_first(queue, durations)
    # b.py: 5 s; the unknown test: UNKNOWN_SECONDS; the two of 0.5 s keep their order.
    assert UNKNOWN_SECONDS > 0.5
    assert list(ordered) == ["b.py", "c.py::new", "a.py::one", "d.py::two"]
    assert ordered["b.py"] is queue["b.py"]


def run_one_worker(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The suite in ``pytester`` run by one xdist worker: the tests in the order
    they were handed out."""
    arguments = ("-p", "support.parallel", "-n", "1", "-v")
    result = runpytest_with_workers(pytester, monkeypatch, *arguments)
    result.assert_outcomes(passed=4)
    return [
        line.split()[-1]
        for line in result.outlines
        if line.startswith("[gw0]") and "PASSED" in line
    ]


def test_the_longest_recorded_test_is_handed_out_first(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_a_quick=QUICK, test_b_slow=SLOW)
    assert run_one_worker(pytester, monkeypatch)[0] == "test_a_quick.py::test_quick[0]"
    durations = pytester.path / "tests" / "durations.json"
    durations.parent.mkdir()
    durations.write_text(json.dumps({"test_b_slow.py::test_slow": 30.0}))
    assert run_one_worker(pytester, monkeypatch)[0] == "test_b_slow.py::test_slow"


def test_update_durations_records_the_tests_run_and_keeps_the_others(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_a_quick=QUICK, test_b_slow=SLOW)
    durations = pytester.path / "tests" / "durations.json"
    durations.parent.mkdir()
    earlier = {"test_b_slow.py::test_slow": 30.0, "test_gone.py::test_deleted": 9.0}
    durations.write_text(json.dumps(earlier))
    for workers in ("0", "2"):
        result = runpytest_with_workers(
            pytester,
            monkeypatch,
            "-p",
            "support.parallel",
            "-n",
            workers,
            "--update-durations",
            "test_a_quick.py",
        )
        result.assert_outcomes(passed=3)
        recorded = json.loads(durations.read_text())
        assert sorted(recorded) == [
            "test_a_quick.py::test_quick[0]",
            "test_a_quick.py::test_quick[1]",
            "test_a_quick.py::test_quick[2]",
            "test_b_slow.py::test_slow",
        ], workers
        assert recorded["test_b_slow.py::test_slow"] == 30.0
        assert all(0 <= recorded[f"test_a_quick.py::test_quick[{n}]"] < 30 for n in range(3))
        assert [path.name for path in durations.parent.iterdir()] == ["durations.json"]
