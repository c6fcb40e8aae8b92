"""Property: what each process counts against an owner's cap on unfinished
bytes (``Uploads.unfinished_bytes``, which keeps what it knows between
counts: :mod:`server.tus.tally`) is what a recount reading every upload's
state gives, after any sequence of:

* creations of single, partial and final uploads, with a length or a
  deferred one, by several owners (anonymous clients among them);
* PATCHes of some bytes, finishing uploads (``post_finish``, completion,
  a final upload's concatenation) or not; PATCHes of deferred-length
  uploads reserve their body under the owner's lock and release it;
* deferred lengths declared, uploads terminated;
* time passing on a clock of the test's (the store's files are stamped with
  it as they are written), uploads expiring by it, and housekeeping's sweep;
* crashes between the steps of a change: a completion or a termination
  ended at any of its file removals and renames (the real code, its system
  calls made to fail from one on), a creation before its hint, a deferred
  PATCH that never released its reservation; a process restarting with nothing known, and a recovery
  finishing what a crash left;
* all of it in one of three processes (:class:`Uploads` of their own on one
  store directory and one lock directory), switching at every step.

Invariant, after every step, for every process and every owner:
``unfinished_bytes`` equals the recount (``UnfinishedTally.recount``) at the
same moment, and it stays so after the recount removed the hints of uploads
gone or completed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dqrxfer.server.tus import errors
from dqrxfer.server.tus import store as store_module
from dqrxfer.server.tus.datastore import UploadInfo
from dqrxfer.server.tus.hooks import TusHooks
from dqrxfer.server.tus.lifecycle import TusOptions, Uploads
from dqrxfer.server.tus.locker import FileLocker
from dqrxfer.server.tus.metrics import tus_metrics
from dqrxfer.server.tus.store import FileStore
from support.stateful import bounded

EXPIRY = 3600.0
OWNERS = ["a@X", "b@X", None]
PROCESSES = 3
#: far above what the rules create: nothing is refused for the cap
CAP = 10**12
#: seconds the clock moves at a time: within an expiry, past one, a little
STEPS = st.sampled_from([1.0, 600.0, EXPIRY / 2, EXPIRY, EXPIRY + 1])


class TallyRuns(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="tally-"))
        self.clock = 2_000_000_000.0  # ahead of the real time: stamps move files forward
        self.processes = [self._process() for _ in range(PROCESSES)]
        self.ids: list[str] = []  # every upload made, whatever became of it

    def _process(self) -> Uploads:
        return Uploads(
            FileStore(self.root / "uploads", fsync="never"),
            FileLocker(self.root / "locks"),
            TusHooks(),
            TusOptions(expiry=EXPIRY, max_unfinished_bytes=CAP),
            tus_metrics(),
            clock=lambda: self.clock,
        )

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------

    @property
    def store(self) -> FileStore:
        store = self.processes[0].store
        assert isinstance(store, FileStore)
        return store

    def _stamp(self, upload_id: str) -> None:
        """The data file written now, on the test's clock."""
        os.utime(self.store.data_path(upload_id), (self.clock, self.clock))

    def _hint(self, info: UploadInfo) -> Path:
        return Path(f"{self.store._owner_dir(info.owner)}/{info.id}")

    def _current(self, data: st.DataObject, usable: bool = True) -> UploadInfo | None:
        """An upload drawn from those made; None if it is gone (or, with
        ``usable``, completed, expired or final: no request changes it)."""
        if not self.ids:
            return None
        upload_id = data.draw(st.sampled_from(self.ids))
        try:
            info = self.store.get(upload_id)
        except errors.TusError:
            return None
        if usable and (
            info.completed or info.is_final or self.processes[0].expired(info, self.clock)
        ):
            return None
        return info

    def _write(self, uploads: Uploads, info: UploadInfo, count: int) -> None:
        chunks = [os.urandom(count)] if count else []
        uploads.store.write(info.id, info.offset, lambda _: chunks.pop() if chunks else b"", count)
        self._stamp(info.id)
        info.offset += count

    def _create(self, uploads: Uploads, info: UploadInfo) -> UploadInfo:
        info = uploads.create(info)
        self._stamp(info.id)
        self.ids.append(info.id)
        return info

    # -- rules -----------------------------------------------------------------

    @rule(
        process=st.integers(0, PROCESSES - 1),
        owner=st.sampled_from(OWNERS),
        length=st.none() | st.integers(1, 50),
        partial=st.booleans(),
    )
    def create(self, process: int, owner: str | None, length: int | None, partial: bool) -> None:
        info = UploadInfo(id="", length=length, owner=owner, concat="partial" if partial else None)
        self._create(self.processes[process], info)

    @rule(process=st.integers(0, PROCESSES - 1), data=st.data())
    def create_final(self, process: int, data: st.DataObject) -> None:
        partials = []
        for upload_id in self.ids:
            try:
                info = self.store.get(upload_id)
            except errors.TusError:
                continue
            if info.is_partial:
                partials.append(info)
        if not partials:
            return
        owner = data.draw(st.sampled_from(partials)).owner
        chosen = [info for info in partials if info.owner == owner][:3]
        uploads = self.processes[process]
        final = self._create(
            uploads,
            UploadInfo(
                id="", length=None, owner=owner, concat="final", partials=[p.id for p in chosen]
            ),
        )
        for partial in chosen:
            if not partial.finished:
                uploads.store.link_final(partial.id, final.id)
        uploads.try_complete_final(final.id)
        event("final upload")

    @rule(process=st.integers(0, PROCESSES - 1), data=st.data(), count=st.integers(0, 60))
    def patch(self, process: int, data: st.DataObject, count: int) -> None:
        info = self._current(data)
        if info is None:
            return
        uploads = self.processes[process]
        with uploads.locked(info.id):
            if info.length is None:
                room, _ = uploads.reserve_room(info, count)
                try:
                    if count <= room:
                        self._write(uploads, info, count)
                finally:
                    uploads.release_room(info)
                return
            self._write(uploads, info, min(count, info.length - info.offset))
            if info.finished:
                event("finished")
                uploads.finish(info)

    @rule(process=st.integers(0, PROCESSES - 1), data=st.data(), more=st.integers(0, 20))
    def declare_length(self, process: int, data: st.DataObject, more: int) -> None:
        info = self._current(data)
        if info is None or info.length is not None:
            return
        uploads = self.processes[process]
        with uploads.locked(info.id):
            uploads.check_declared(info, info.offset + more)
            uploads.store.declare_length(info, info.offset + more)
            if info.finished:
                uploads.finish(info)

    @rule(process=st.integers(0, PROCESSES - 1), data=st.data())
    def terminate(self, process: int, data: st.DataObject) -> None:
        info = self._current(data, usable=False)
        if info is not None:
            uploads = self.processes[process]
            with uploads.locked(info.id):
                uploads.terminate(info)

    @rule(seconds=STEPS)
    def time_passes(self, seconds: float) -> None:
        self.clock += seconds

    @rule(process=st.integers(0, PROCESSES - 1))
    def sweep(self, process: int) -> None:
        report = self.processes[process].sweep()
        if report.expired:
            event("expired uploads swept")

    # -- crashes -----------------------------------------------------------------

    @rule(data=st.data(), step=st.integers(0, 2))
    def crash_while_completing(self, data: st.DataObject, step: int) -> None:
        """The rest written and ``post_finish`` run, then the process ends at
        the ``step``-th removal or rename of the completion (or after)."""
        info = self._current(data)
        if info is None or info.length is None:
            return
        uploads = self.processes[0]
        self._write(uploads, info, info.length - info.offset)
        with _crash_at(step):
            uploads.finish(info)
        event("crash while completing")

    @rule(data=st.data(), step=st.integers(0, 6))
    def crash_while_terminating(self, data: st.DataObject, step: int) -> None:
        """``FileStore.terminate`` ends at its ``step``-th removal (or after)."""
        info = self._current(data, usable=False)
        if info is not None:
            with _crash_at(step):
                self.processes[0].terminate(info)

    @rule(owner=st.sampled_from(OWNERS), length=st.integers(1, 50))
    def crash_while_creating(self, owner: str | None, length: int) -> None:
        """State and data written, the owner's hint not yet."""
        info = self._create(self.processes[0], UploadInfo(id="", length=length, owner=owner))
        self._hint(info).unlink()

    @rule(process=st.integers(0, PROCESSES - 1), data=st.data(), count=st.integers(0, 60))
    def crash_while_patching(self, process: int, data: st.DataObject, count: int) -> None:
        """A deferred-length PATCH that reserved its body and wrote some of
        it, never released: its reservation stays counted."""
        info = self._current(data)
        if info is None or info.length is not None:
            return
        uploads = self.processes[process]
        room, _ = uploads.reserve_room(info, count)
        if count <= room:
            self._write(uploads, info, count // 2)
        event("crash while patching")

    @rule(process=st.integers(0, PROCESSES - 1))
    def restart(self, process: int) -> None:
        self.processes[process] = self._process()

    @precondition(lambda self: bool(self.ids))
    @rule(process=st.integers(0, PROCESSES - 1), data=st.data())
    def recover(self, process: int, data: st.DataObject) -> None:
        info = self._current(data, usable=False)
        if info is not None and self.processes[process].recover(info).completed:
            event("recovered")

    # -- the invariant ---------------------------------------------------------

    @invariant()
    def every_process_counts_what_a_recount_gives(self) -> None:
        for owner in OWNERS:
            counts = [uploads.unfinished_bytes(owner) for uploads in self.processes]
            recount = self.processes[0].tally.recount(owner, EXPIRY, self.clock)
            assert counts == [recount] * PROCESSES, (owner, counts, recount)
            # The recount removed the hints of uploads gone or completed.
            assert [uploads.unfinished_bytes(owner) for uploads in self.processes] == counts


class _Crash(BaseException):
    """The process ended here."""


@contextmanager
def _crash_at(step: int) -> Iterator[None]:
    """The store's ``step``-th file removal or rename (counting from 0)
    raises :class:`_Crash` instead of happening, and nothing after it
    happens; no crash if there are fewer."""
    calls = 0

    def crashing(real: Callable[..., None]) -> Callable[..., None]:
        def call(*args: object) -> None:
            nonlocal calls
            calls += 1
            if calls > step:
                raise _Crash
            real(*args)

        return call

    with (
        mock.patch.object(store_module, "_remove", crashing(store_module._remove)),
        mock.patch.object(store_module.os, "rename", crashing(os.rename)),
    ):
        try:
            yield
        except _Crash:
            event("crashed")


TallyRuns.TestCase.settings = bounded(200, 40)


def test_the_tally_is_always_what_a_recount_gives() -> None:
    TallyRuns.TestCase("runTest").runTest()
