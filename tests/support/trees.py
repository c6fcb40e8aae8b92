"""A directory tree as data, to compare before and after a refused change."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (not following links), by relative path:
    ``dir``, ``-> target`` for a link, a file's SHA-256, or its mode for
    anything else.  An absent ``root`` is an empty tree."""
    seen: dict[str, str] = {}
    if not root.exists():
        return seen
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            relative = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                seen[relative] = f"-> {os.readlink(path)}"
            elif stat.S_ISDIR(mode):
                seen[relative] = "dir"
            elif stat.S_ISREG(mode):
                seen[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                seen[relative] = f"mode {mode:o}"
    return seen
