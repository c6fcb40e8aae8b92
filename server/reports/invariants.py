"""The report tree's invariant, checked on the tree a change would leave.

**Invariant.** In a report directory (``<graceid>_dir/<graceid>_<site>_<revision>``):

1. every entry is a directory, a regular file that is neither setuid nor
   setgid, or a symbolic link (no device, FIFO or socket);
2. every symbolic link, followed on disk as the kernel follows it (each link
   met on the way expanded in turn, a ``..`` taken after the expansion), stays
   inside the report directory *at every step*: its targets are relative, no
   ``..`` climbs above the report directory, and at most :data:`MAX_LINKS`
   links are followed (the kernel's own limit; a loop never ends inside).

A step through an entry that does not exist, or through a regular file, is
taken as through a directory (the kernel would stop there; a later pass may
create that directory).  So only *links* change where a path resolves, and
only a change that creates or replaces a link can break rule 2: a single
file that lands on a missing name or replaces a file (under real
directories) leaves every resolution as it was.  "At every step" means a link
never depends on anything outside its report (a sibling report's links, the
event directory), which another upload could change without this report's
check seeing it.

Each publication checks the state it would leave, before a reader can see it
(:func:`check_tree` on the assembled tree before the swap, or on a private
hard-link copy before an in-place overlay), and is refused whole when the
check fails.  Served files are checked again on the way out (the
``/reports/`` route, the front ends' link options): see docs/reports.md.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: Links followed in one resolution (Linux's MAXSYMLINKS).
MAX_LINKS = 40

RULE_INSIDE = "every symbolic link must resolve inside its report"
RULE_TYPES = "reports hold only directories, regular files and symbolic links"


class TreeInvariantBroken(Exception):
    """The tree breaks the invariant; ``path`` (relative to the report) names the entry."""

    def __init__(self, path: str, rule: str) -> None:
        self.path = path
        self.rule = rule
        super().__init__(f"{path!r}: {rule}")


def check_tree(report_dir: Path, overrides: dict[str, str | None] | None = None) -> None:
    """Raise :class:`TreeInvariantBroken` unless the tree at ``report_dir`` keeps the invariant.

    ``overrides`` maps report-relative paths to a link target, or to ``None``
    for "a regular file will be here": the state a change *would* leave,
    checked without making it.

    One walk of the tree finds every link; links are then resolved in memory
    (directories, files and missing names all resolve alike, so only the
    links matter), each once: a link met on the way to another is taken at
    the end it was already found to have.
    """
    if report_dir.is_symlink():
        raise TreeInvariantBroken(".", "the report directory is a symbolic link")
    links = _links(report_dir, overrides or {})
    resolver = _Resolver(links)
    for relpath in sorted(links):
        resolver.end_of(relpath)


def _links(report_dir: Path, overrides: dict[str, str | None]) -> dict[str, str]:
    """Every link (relative path: target) as the tree would be, checking rule 1 on the way."""
    found: dict[str, str] = {}
    stack = [""]
    while stack:
        directory = stack.pop()
        with os.scandir(report_dir / directory if directory else report_dir) as scan:
            for entry in scan:
                relpath = f"{directory}/{entry.name}" if directory else entry.name
                if relpath in overrides:
                    continue
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    stack.append(relpath)
                elif stat.S_ISLNK(mode):
                    found[relpath] = os.readlink(entry.path)
                elif stat.S_ISREG(mode):
                    if mode & (stat.S_ISUID | stat.S_ISGID):
                        raise TreeInvariantBroken(relpath, f"a setuid or setgid file; {RULE_TYPES}")
                else:
                    raise TreeInvariantBroken(relpath, f"{_kind_name(mode)}; {RULE_TYPES}")
    found.update({path: target for path, target in overrides.items() if target is not None})
    return found


def _kind_name(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device node"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return f"an entry of type {stat.S_IFMT(mode):o}"


class _Resolver:
    """Where each link ends, as path components under the report, and how
    many links it took to get there (the link itself included)."""

    def __init__(self, links: dict[str, str]) -> None:
        self.links = links
        self.ends: dict[str, tuple[list[str], int]] = {}
        self.resolving: list[str] = []

    def end_of(self, relpath: str) -> tuple[list[str], int]:
        if relpath in self.ends:
            return self.ends[relpath]
        target = self.links[relpath]
        shown = f"symbolic link to {target!r}"
        if relpath in self.resolving or len(self.resolving) >= MAX_LINKS:
            outer = self.resolving[0]  # the link being checked, not one on its way
            raise TreeInvariantBroken(
                outer,
                f"symbolic link to {self.links[outer]!r} passes more than {MAX_LINKS} links "
                f"(a loop?); {RULE_INSIDE}",
            )
        if target.startswith("/"):
            raise TreeInvariantBroken(relpath, f"{shown} is absolute; {RULE_INSIDE}")
        self.resolving.append(relpath)
        position = relpath.split("/")[:-1]
        taken = 1
        via: str | None = None
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not position:
                    through = f" (through the link {via!r})" if via else ""
                    raise TreeInvariantBroken(
                        relpath, f"{shown} leaves the report{through}; {RULE_INSIDE}"
                    )
                position.pop()
                continue
            candidate = "/".join([*position, part])
            if candidate not in self.links:
                position.append(part)
                continue
            end, used = self.end_of(candidate)
            taken += used
            if taken > MAX_LINKS:
                raise TreeInvariantBroken(
                    relpath, f"{shown} passes more than {MAX_LINKS} links; {RULE_INSIDE}"
                )
            position = list(end)
            via = candidate
        self.resolving.pop()
        self.ends[relpath] = (position, taken)
        return position, taken
