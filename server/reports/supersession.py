"""Which paths of a payload an upload finalized again must leave alone.

An upload takes its place in its report's order when its first finalization
begins (:func:`.ledger.take_place`).  When that finalization is cut (a crash,
an error) and a later upload of the same report publishes in the meantime,
the later upload records its paths as *superseded* for the earlier one
(:func:`.ledger.supersede`) before it publishes them.  Finalizing the earlier
upload again (recovery, or its client re-sending the last PATCH) then
publishes only the rest of its payload: the newer content stays.

A path ``p`` of the payload is superseded when a later upload published
``p`` itself, something under ``p`` (``p`` is a directory there now) or a
file or link at a parent of ``p``.  A directory of an archive is dropped with
everything in it when a later upload put a file or link in its place.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ..db import Database
from . import ledger
from .archive import StagedArchive
from .invariants import TreeInvariantBroken


class Superseded:
    """The paths later uploads took from one upload (report-relative)."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = frozenset(paths)
        self._parents = frozenset(_parents_of(self.paths))

    def __bool__(self) -> bool:
        return bool(self.paths)

    def covers(self, path: str) -> bool:
        """Whether a file or link at ``path`` would replace newer content."""
        return path in self._parents or self.covers_tree(path)

    def covers_tree(self, path: str) -> bool:
        """Whether ``path`` or one of its parents was taken (as a file or a link)."""
        parts = path.split("/")
        return any("/".join(parts[:end]) in self.paths for end in range(1, len(parts) + 1))


def _parents_of(paths: Iterable[str]) -> Iterable[str]:
    for path in paths:
        parts = path.split("/")
        for end in range(1, len(parts)):
            yield "/".join(parts[:end])


def drop_superseded(staged: StagedArchive, prefix: str, superseded: Superseded) -> list[str]:
    """Remove from ``staged`` (and its staging directory) what ``superseded``
    covers; return the report-relative paths of the files and links dropped.

    ``prefix``: the archive's subdir and a slash, or ''.
    """
    if not superseded:
        return []
    dropped = []
    for name in sorted(staged.directories):
        if name in staged.directories and superseded.covers_tree(prefix + name):
            shutil.rmtree(staged.root / name, ignore_errors=True)
            inside = f"{name}/"
            staged.directories = {
                other
                for other in staged.directories
                if other != name and not other.startswith(inside)
            }
    for name in sorted(staged.files):
        if superseded.covers(prefix + name) or _under_dropped(name, staged):
            del staged.files[name]
            (staged.root / name).unlink(missing_ok=True)
            dropped.append(prefix + name)
    for name in sorted(staged.links):
        if superseded.covers(prefix + name) or _under_dropped(name, staged):
            del staged.links[name]
            dropped.append(prefix + name)
    return sorted(dropped)


def _under_dropped(name: str, staged: StagedArchive) -> bool:
    """Whether a parent directory of ``name`` was dropped from ``staged``."""
    parent = name.rpartition("/")[0]
    return bool(parent) and parent not in staged.directories


@dataclass(frozen=True)
class Claim:
    """A finalization's place: what it must leave alone, and :meth:`paths`,
    called before anything is published."""

    database: Database
    place: ledger.Place
    durable: bool

    @property
    def superseded(self) -> Superseded:
        return Superseded(self.place.superseded)

    def paths(self, paths: list[str]) -> None:
        """Tell earlier uploads of the report whose finalization was cut that
        ``paths`` are now this upload's (durably, before they are published)."""
        supersede_durably(self.database, self.place.cut_earlier, paths, self.durable)

    @contextmanager
    def publishing(self, paths: list[str]) -> Iterator[None]:
        """:meth:`paths` for the ``with`` block that publishes them; a refusal
        there (the whole-tree check) withdraws them again."""
        with claiming(self.database, self.place.cut_earlier, paths, self.durable):
            yield


def supersede_durably(
    database: Database, cut_earlier: Sequence[str], paths: list[str], durable: bool
) -> int | None:
    """Record ``paths`` as superseded for the uploads ``cut_earlier``; return
    the mark that :func:`.ledger.withdraw_superseded` takes (None: nothing recorded)."""
    if not cut_earlier or not paths:
        return None
    with database.transaction(write=True, durable=durable) as connection:
        mark = ledger.superseded_mark(connection)
        ledger.supersede(connection, cut_earlier, paths)
    return mark


@contextmanager
def claiming(
    database: Database, cut_earlier: Sequence[str], paths: list[str], durable: bool
) -> Iterator[None]:
    """Supersede ``paths`` for ``cut_earlier`` around a publication; if the
    publication is refused (:class:`.invariants.TreeInvariantBroken`: nothing
    was published) the records are withdrawn, or the cut uploads, finished
    again, would leave alone paths that nobody published."""
    mark = supersede_durably(database, cut_earlier, paths, durable)
    try:
        yield
    except TreeInvariantBroken:
        if mark is not None:
            with database.transaction(write=True, durable=durable) as connection:
                ledger.withdraw_superseded(connection, cut_earlier, mark)
        raise
