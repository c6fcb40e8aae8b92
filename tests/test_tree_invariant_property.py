"""Property: whatever sequence of uploads arrives, a report keeps its invariant.

A hypothesis state machine sends random sequences of single files, tar
archives and ``reports register`` directories (files, directories, relative
links of every depth with ``..`` chains, each kind replacing each other kind,
under sub-directories) into one report.  One rule aims: it turns a name that
existing links pass through into a link (what the two-upload escape does),
which random archives alone reach too rarely for a bounded run.  All go
through the real code (``finalize_upload`` and ``admin.register`` on a data
directory with its SQLite database; the swap by ``renameat2`` and the
in-place overlay of filesystems without it both taken).  After every step, an
oracle that shares no code with the server walks the report: each entry's
``realpath`` is inside the report and nothing is a device, FIFO, socket or
setuid file; a refused upload left the report exactly as it was; staging is
empty.

Bounded for CI (``derandomize``: the same sequences on every run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import stat
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import text

from dqrxfer.server.config import load_settings
from dqrxfer.server.db import Database, migrate
from dqrxfer.server.reports import admin, publish
from dqrxfer.server.reports.finalize import FinalizeError, finalize_upload
from dqrxfer.server.tus.store import FSYNC_NEVER, UploadInfo
from support import tars
from support.stateful import bounded
from support.trees import snapshot
from support.tus import tar_metadata

GRACEID = "S230518h"
#: Names of files and links (and, now and then, of a directory: the kind a
#: later pass may try to replace), and the directories they live in, so that
#: later uploads hit what earlier ones made.
LEAVES = ["a", "f"]
DIRECTORIES = ["", "d", "d/e"]
leaves = st.sampled_from(LEAVES)


def _entry_path(directory: str, leaf: str) -> str:
    return f"{directory}/{leaf}" if directory else leaf


entry_paths = st.builds(_entry_path, st.sampled_from(DIRECTORIES), leaves)
directory_paths = st.sampled_from(["d", "d/e", "d/e", "a", "d/f"])
components = st.sampled_from([*LEAVES, "d", "e"])


def _target(down: list[str], up: int, then: list[str]) -> str:
    return "/".join([*down, *[".."] * up, *then]) or "."


#: Link targets: down some names and back up a '..' chain (the shape that
#: climbs through a name a later upload turns into a link), a link to an
#: ancestor ('.', '..', '../..'), or any mix of names, '..' and '.'.
link_targets = st.one_of(
    st.builds(
        _target, st.lists(components, min_size=1, max_size=2), st.integers(1, 3), st.just([])
    ),
    st.builds(_target, st.just([]), st.integers(0, 2), st.lists(components, max_size=1)),
    st.lists(st.sampled_from([*LEAVES, "d", "..", "."]), min_size=1, max_size=6).map("/".join),
)
entries = st.one_of(
    st.builds(tars.file, entry_paths, st.binary(max_size=8)),
    st.builds(tars.directory, directory_paths),
    st.builds(tars.symlink, entry_paths, link_targets),
)
subdirs = st.sampled_from(["", "", "d", "d/e"])


def oracle(report: Path) -> list[str]:
    """What is wrong with the tree at ``report`` (nothing: an empty list)."""
    inside = os.path.realpath(report)
    wrong = []
    for directory, dirs, files in os.walk(report):
        for name in dirs + files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, report)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                wrong.append(f"{relative}: type {stat.S_IFMT(mode):o}")
            elif stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                wrong.append(f"{relative}: setuid/setgid")
            real = os.path.realpath(path)
            if real != inside and not real.startswith(inside + os.sep):
                wrong.append(f"{relative} -> {os.readlink(path)} resolves to {real}")
    return wrong


def passed_names(tree: dict[str, str]) -> list[str]:
    """Paths the links of ``tree`` (a :func:`snapshot`) pass through on the
    way to their targets, read as written: the names whose turning into a
    link changes where those links go."""
    passed: set[str] = set()
    for path, what in tree.items():
        if not what.startswith("-> "):
            continue
        position = path.split("/")[:-1]
        steps = [part for part in what[3:].split("/") if part not in ("", ".")]
        for part in steps:
            if part == "..":
                if position:
                    position.pop()
                continue
            position.append(part)
            passed.add("/".join(position))
    return sorted(name for name in passed if not tree.get(name, "").startswith("-> "))


class _DataDir:
    """One data directory and database for every example (each example its own report)."""

    def __init__(self, base: Path) -> None:
        loaded = load_settings(None, base / "data")
        self.settings = dataclasses.replace(loaded, fsync=FSYNC_NEVER)
        self.settings.uploads_dir.mkdir(parents=True)
        self.database = Database(self.settings.database_url)
        migrate.upgrade(self.database.engine)
        self.revisions = itertools.count(1)
        self.uploads = itertools.count(1)


_shared: list[_DataDir] = []


class ReportUploads(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.data = _shared[0]
        self.revision = next(self.data.revisions)
        self.report = self.data.settings.data_dir / (
            f"reports/O4/S230518h_dir/S230518h_llo_{self.revision}"
        )
        self.work = self.data.settings.data_dir / "reports/O4/.dqrxfer-staging/work"
        self.passed: list[str] = []

    def _finalize(self, payload: bytes, metadata: dict[str, str], in_place: bool) -> None:
        upload_id = f"u{next(self.data.uploads)}"
        path = self.data.settings.uploads_dir / upload_id
        path.write_bytes(payload)
        info = UploadInfo(id=upload_id, length=len(payload), metadata=metadata)
        before = snapshot(self.report)
        self.passed: list[str] = []
        with mock.patch.object(publish, "supports_exchange", lambda work: not in_place):
            try:
                finalize_upload(self.data.database, self.data.settings, info, path)
            except FinalizeError as refusal:
                assert "nothing was published" in str(refusal)
                assert snapshot(self.report) == before, f"refused, yet changed: {refusal}"
        self.passed = passed_names(snapshot(self.report))

    @rule(members=st.lists(entries, min_size=1, max_size=4), subdir=subdirs, in_place=st.booleans())
    def archive(self, members: list[tars.Entry], subdir: str, in_place: bool) -> None:
        metadata = tar_metadata(revision=self.revision, subdir=subdir)
        self._finalize(tars.build(members), metadata, in_place)

    @rule(data=st.data(), subdir=subdirs, in_place=st.booleans())
    def links_archive(self, data: st.DataObject, subdir: str, in_place: bool) -> None:
        """An archive of links whose targets stay inside the report as written
        (down some names, up at most as far as that allows, down again): the
        links a per-archive check accepts, so the steps explore what later
        passes make of them."""
        links = []
        for _ in range(data.draw(st.integers(1, 3))):
            path = data.draw(entry_paths)
            depth = len([*subdir.split("/"), *path.split("/")[:-1]]) - (subdir == "")
            down = data.draw(st.lists(components, max_size=2))
            up = data.draw(st.integers(0, depth + len(down)))
            then = data.draw(st.lists(components, max_size=1))
            links.append(tars.symlink(path, _target(down, up, then)))
        metadata = tar_metadata(revision=self.revision, subdir=subdir)
        self._finalize(tars.build(links), metadata, in_place)

    @precondition(lambda self: self.passed)
    @rule(data=st.data(), in_place=st.booleans())
    def link_on_a_passed_name(self, data: st.DataObject, in_place: bool) -> None:
        """Turn a name that links pass through (whatever is there: nothing, a
        file, a directory, a link) into a link to an ancestor or a neighbour,
        as written inside the report."""
        path = data.draw(st.sampled_from(self.passed))
        up = data.draw(st.integers(0, path.count("/")))
        target = _target([], up, data.draw(st.lists(components, max_size=1)))
        metadata = tar_metadata(revision=self.revision)
        self._finalize(tars.build([tars.symlink(path, target)]), metadata, in_place)

    @rule(path=entry_paths, data=st.binary(max_size=8))
    def single_file(self, path: str, data: bytes) -> None:
        subdir, _, name = path.rpartition("/")
        metadata = tar_metadata(filename=name, kind="file", revision=self.revision, subdir=subdir)
        self._finalize(data, metadata, in_place=False)

    @rule(members=st.lists(entries, min_size=1, max_size=4), subdir=subdirs)
    def register(self, members: list[tars.Entry], subdir: str) -> None:
        """``reports register`` of a directory holding ``members`` (the ones
        that fit: a later member under an earlier file is left out)."""
        source = self.data.settings.data_dir.parent / f"source{next(self.data.uploads)}"
        source.mkdir()
        for member in members:
            path = source / member.name
            with contextlib.suppress(OSError):
                path.parent.mkdir(parents=True, exist_ok=True)
                if member.kind == "dir":
                    path.mkdir(exist_ok=True)
                elif member.kind == "symlink":
                    path.symlink_to(member.target)
                else:
                    path.write_bytes(member.data)
        before = snapshot(self.report)
        try:
            admin.register(
                self.data.settings,
                self.data.database,
                "O4",
                GRACEID,
                "llo",
                self.revision,
                source,
                subdir,
            )
        except admin.AdminError as refusal:
            assert "nothing was published" in str(refusal)
            assert snapshot(self.report) == before, f"refused, yet changed: {refusal}"
        self.passed = passed_names(snapshot(self.report))

    @invariant()
    def report_stays_inside_itself(self) -> None:
        if self.report.exists():
            assert oracle(self.report) == []
        assert not self.work.exists() or list(self.work.iterdir()) == []

    @invariant()
    def the_database_says_what_the_report_holds(self) -> None:
        """The report's file rows are its regular files with their sizes, and
        its totals are those of its rows (the uploads move the totals by what
        they change; ``register`` counts them again)."""
        on_disk = {
            str(path.relative_to(self.report)): path.lstat().st_size
            for path in (self.report.rglob("*") if self.report.exists() else [])
            if stat.S_ISREG(path.lstat().st_mode)
        }
        with self.data.database.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT f.relpath, f.size FROM report_files f JOIN reports r"
                    " ON r.id = f.report_id WHERE r.revision = :revision"
                ),
                {"revision": self.revision},
            ).all()
            totals = connection.execute(
                text("SELECT file_count, total_bytes FROM reports WHERE revision = :revision"),
                {"revision": self.revision},
            ).all()
        assert dict(rows) == on_disk
        assert totals in ([], [(len(rows), sum(size for _path, size in rows))]), (totals, rows)


ReportUploads.TestCase.settings = bounded(100, 8, HealthCheck.filter_too_much)


@pytest.fixture
def shared_data_dir(tmp_path: Path):
    data = _DataDir(tmp_path)
    _shared.append(data)
    try:
        yield data
    finally:
        _shared.remove(data)
        data.database.dispose()


def test_uploads_keep_the_report_inside_itself(shared_data_dir: _DataDir) -> None:
    ReportUploads.TestCase("runTest").runTest()


#: Explicit regressions: what the machine found on the code before the
#: whole-tree check, and its relatives.
REGRESSIONS = {
    "two-archives": ([tars.symlink("a", "f/..")], [tars.symlink("f", ".")]),
    "file-replaced": ([tars.file("f"), tars.symlink("a", "f/..")], [tars.symlink("f", ".")]),
    "deeper": ([tars.symlink("d/e/a", "f/../../../x")], [tars.symlink("d/e/f", "../..")]),
}


@pytest.mark.parametrize("in_place", [False, True], ids=["swap", "in-place"])
@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_known_escapes_are_refused(shared_data_dir: _DataDir, name: str, in_place: bool) -> None:
    first, second = REGRESSIONS[name]
    machine = ReportUploads()
    machine.archive(first, "", in_place)
    before = snapshot(machine.report)
    assert any(value.startswith("-> ") for value in before.values())

    machine.archive(second, "", in_place)  # refused: the report unchanged

    assert snapshot(machine.report) == before
    machine.report_stays_inside_itself()
