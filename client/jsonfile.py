"""The client's small JSON files (what it remembers of servers): read
leniently, written atomically."""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

log = logging.getLogger("dqr-xfer")


def read_servers(path: Path, version: int) -> dict[str, Any]:
    """The ``servers`` mapping of the file at ``path`` written with format
    ``version``: empty if the file is missing, unreadable or of another format
    (what it remembers is then learnt again, never an error)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.debug("%s not used: %s", path, error)
        return {}
    if not isinstance(data, dict) or data.get("format") != version:
        return {}
    servers = data.get("servers")
    return servers if isinstance(servers, dict) else {}


def write_servers(path: Path, version: int, servers: dict[str, Any]) -> None:
    """Replace the file at ``path`` with ``servers`` (temp file, fsync,
    rename; the directory made private if it is new).  Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"format": version, "servers": servers}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
