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


def plant(root: Path, links: dict[str, str], files: dict[str, str] | None = None) -> Path:
    """Make ``files`` (name: content) and ``links`` (name: target) under
    ``root`` on disk, past the server's checks (a tree changed by hand, or
    published before the checks existed); return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    for name, target in links.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(target)
    return root
