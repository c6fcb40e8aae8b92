"""The report tree's invariant checker (server/reports/invariants.py), one rule
at a time, on trees made on disk (the live tests drive it through uploads)."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from dqrxfer.server.reports.invariants import RULE_INSIDE, TreeInvariantBroken, check_tree
from support.trees import plant


def make(report: Path, links: dict[str, str], files: tuple[str, ...] = ()) -> Path:
    return plant(report, links, {name: name for name in files})


@pytest.mark.parametrize(
    "links",
    [
        {"a": "."},
        {"d/a": "../x"},  # dangling: resolves nowhere, stays inside as written
        {"d/a": "e/../../x"},  # through a name that does not exist yet
        {"d/a": "f/../../x"},  # through a file (the kernel stops there)
        {"d/a": "g", "d/g": "h", "d/h": ".."},  # a chain back to the report itself
    ],
    ids=["self", "dangling", "through-missing", "through-file", "chain"],
)
def test_links_that_stay_inside_pass(tmp_path: Path, links: dict[str, str]) -> None:
    check_tree(make(tmp_path / "report", links, files=("d/f",)))


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ({"a": "/etc/passwd"}, "'a': symbolic link to '/etc/passwd' is absolute"),
        ({"a": ".."}, "'a': symbolic link to '..' leaves the report"),
        (
            {"d/b": "f/../../x", "d/f": ".."},
            "'d/b': symbolic link to 'f/../../x' leaves the report (through the link 'd/f')",
        ),
        (
            {"b": "../report/index.html"},
            "'b': symbolic link to '../report/index.html' leaves the report",
        ),
        ({"a": "b", "b": "a"}, "'a': symbolic link to 'b' passes more than 40 links"),
        ({"a": "b/x", "b": "/etc"}, "'b': symbolic link to '/etc' is absolute"),
        (
            {f"l{index}": f"l{index + 1}" for index in range(1000)},
            "'l0': symbolic link to 'l1' passes more than 40 links",
        ),
    ],
    ids=["absolute", "up", "two-links", "out-and-back", "loop", "through-absolute", "long-chain"],
)
def test_links_that_leave_fail(tmp_path: Path, links: dict[str, str], message: str) -> None:
    with pytest.raises(TreeInvariantBroken) as refused:
        check_tree(make(tmp_path / "report", links, files=("index.html",)))
    assert message in str(refused.value) and RULE_INSIDE in str(refused.value)


def test_overrides_check_the_state_a_change_would_leave(tmp_path: Path) -> None:
    report = make(tmp_path / "report", {"d/b": "f/../../x"}, files=("d/f",))
    check_tree(report)
    with pytest.raises(TreeInvariantBroken, match="through the link 'd/f'"):
        check_tree(report, {"d/f": ".."})
    # A file over a link another link climbs through: it climbs as written.
    report = make(tmp_path / "other", {"d/f": "e/g", "d/b": "f/../../../x"}, files=("d/e/g/y",))
    check_tree(report)
    with pytest.raises(TreeInvariantBroken, match="'d/b': symbolic link to 'f/../../../x' leaves"):
        check_tree(report, {"d/f": None})


def special_files(report: Path) -> dict[str, str]:
    made = {}
    os.mkfifo(report / "pipe")
    made["pipe"] = "a FIFO"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(report / "sock"))
    made["sock"] = "a socket"
    if os.geteuid() == 0:
        os.mknod(report / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        made["null"] = "a device node"
    setuid = report / "setuid"
    setuid.write_text("#!/bin/sh\n")
    setuid.chmod(0o4755)
    made["setuid"] = "a setuid or setgid file"
    return made


def test_only_directories_files_and_links(tmp_path: Path) -> None:
    for name, what in special_files(make(tmp_path / "specials", {})).items():
        report = make(tmp_path / name, {}, files=("index.html",))
        os.rename(tmp_path / "specials" / name, report / name)
        with pytest.raises(TreeInvariantBroken) as refused:
            check_tree(report)
        assert str(refused.value).startswith(f"'{name}': {what}; reports hold only")


def test_a_report_directory_that_is_a_link_fails(tmp_path: Path) -> None:
    real = make(tmp_path / "real", {}, files=("index.html",))
    (tmp_path / "alias").symlink_to(real)
    with pytest.raises(TreeInvariantBroken, match="the report directory is a symbolic link"):
        check_tree(tmp_path / "alias")
