"""``GET /healthz``: can this server do its job right now?

Checks that the database answers, that the uploads directory, the staging
area and every project's reports root can be written, and that each file
system holding them has at least ``min_free_space`` bytes free.  Answers 200
when every check passes and 503 otherwise, with each check's result as JSON,
for systemd (ops/systemd), load balancers and monitoring.  Meant for the
host and the monitoring only: the front end restricts it.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from .auth import exempt
from .config import Settings
from .services import services

blueprint = Blueprint("health", __name__)


def check_database() -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with services().database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # any failure to reach the database is the finding
        return {"ok": False, "error": f"{type(error).__name__}: {error}".splitlines()[0]}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2)}


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: Path) -> dict[str, Any]:
    """Write (and remove) a probe file in ``path``.  A directory that does not
    exist yet (created at the first report) passes if it can be created."""
    result: dict[str, Any] = {"path": str(path)}
    if not path.exists():
        parent = nearest_existing(path)
        if not parent.is_dir():
            return {**result, "ok": False, "error": f"{parent} is not a directory"}
        if not os.access(parent, os.W_OK | os.X_OK):
            return {**result, "ok": False, "error": f"missing, and {parent} is not writable"}
        return {**result, "ok": True, "note": "missing; created when first needed"}
    if not path.is_dir():
        return {**result, "ok": False, "error": "not a directory"}
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".healthz-") as probe:
            probe.write(b"ok")
            probe.flush()
    except OSError as error:
        return {**result, "ok": False, "error": error.strerror or str(error)}
    return {**result, "ok": True}


def directories(settings: Settings) -> dict[str, Path]:
    named = {"uploads": settings.uploads_dir}
    for name, project in sorted(settings.projects.items()):
        named[f"reports:{name}"] = project.reports_root
        named[f"staging:{name}"] = project.staging
    return named


def check_free_space(paths: list[Path], minimum: int) -> dict[str, Any]:
    """Free bytes (for unprivileged writers) on each file system holding ``paths``."""
    filesystems: dict[int, dict[str, Any]] = {}
    for path in paths:
        existing = nearest_existing(path)
        try:
            device = existing.stat().st_dev
            if device in filesystems:
                continue
            stats = os.statvfs(existing)
        except OSError as error:
            return {"ok": False, "min_bytes": minimum, "error": f"{existing}: {error.strerror}"}
        free = stats.f_bavail * stats.f_frsize
        filesystems[device] = {"path": str(existing), "free_bytes": free, "ok": free >= minimum}
    found = list(filesystems.values())
    return {"ok": all(fs["ok"] for fs in found), "min_bytes": minimum, "filesystems": found}


@blueprint.get("/healthz")
@exempt  # probes (systemd, load balancers) carry no credentials
def healthz() -> tuple[Response, int]:
    settings: Settings = services().settings
    checks: dict[str, dict[str, Any]] = {"database": check_database()}
    named = directories(settings)
    for name, path in named.items():
        checks[name] = check_writable(path)
    checks["free_space"] = check_free_space(list(named.values()), settings.min_free_space)
    healthy = all(check["ok"] for check in checks.values())
    response = jsonify({"status": "ok" if healthy else "failing", "checks": checks})
    response.headers["Cache-Control"] = "no-store"
    return response, 200 if healthy else 503
