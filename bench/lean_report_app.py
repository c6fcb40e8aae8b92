"""A floor for what a report upload adds to the tus layer: the full app's
required steps written straight, served like the tus layer.

Not a server to deploy.  It takes the same steps as the full application's
hooks (``server/reports/hooks.py``) for the benchmark's uploads (single files
of known length, one principal, reports nobody else finalizes at once) and
leaves out everything else: no SQLAlchemy (one ``sqlite3`` connection per
thread, hand-written SQL on the same schema), no re-sent PATCH, cut upload,
supersession, link-replacement check, refusal or full-disk handling, no
access control, API, metrics, cap on unfinished bytes or log line.  What it
keeps, in the full app's order and with its fsync policy:

* the metadata validated (``validate_for_settings``) at creation;
* the upload's row inserted at creation, in a transaction of its own;
* under the report's lock (a blocking ``flock`` on one of 256 files): the
  upload's place taken in a transaction; the file published (directories
  made, hard link to a hidden name, ``chmod``, rename, the directory
  flushed); the event, report, file and upload rows written in a transaction
  and the database's log flushed.

Measured beside the full app (``tus_bench.py --contenders ... lean``), it
shows how much of the full app's cost is the work a report upload needs and
how much is the way the full app does it.

    dqrxfer-server db upgrade --data-dir /tmp/lean [--config server.toml]
    python -m bench.lean_report_app --port 8080 --data-dir /tmp/lean [--config server.toml]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import secrets
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask

from dqrxfer import contract
from dqrxfer.server.config import Settings, load_settings
from dqrxfer.server.reports.validation import validate_for_settings
from dqrxfer.server.tus import (
    FileLocker,
    FileStore,
    TusHooks,
    TusOptions,
    UploadInfo,
    make_blueprint,
)
from dqrxfer.server.wsgi import FlaskServer, gunicorn_options

INSERT_UPLOAD = (
    "INSERT INTO uploads (id, principal, project, graceid, site, revision, subdir, filename, "
    "kind, sha256, length, state, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,'receiving',?)"
)
SELECT_PLACE = "SELECT finalize_order FROM uploads WHERE id = ?"
TAKE_PLACE = (
    "UPDATE uploads SET finalize_order = (SELECT coalesce(max(finalize_order), 0) + 1 "
    "FROM uploads) WHERE id = ? AND finalize_order IS NULL"
)
SELECT_REPORT = (
    "SELECT reports.id, reports.url FROM reports JOIN events ON events.id = reports.event_id "
    "WHERE events.graceid = ? AND reports.project = ? AND reports.site = ? AND reports.revision = ?"
)
SELECT_EVENT = "SELECT id FROM events WHERE graceid = ?"
INSERT_EVENT = "INSERT INTO events (graceid, created) VALUES (?, ?)"
INSERT_REPORT = (
    "INSERT INTO reports (event_id, project, site, revision, path, url, created, updated, "
    "file_count, total_bytes) VALUES (?,?,?,?,?,?,?,?,1,?)"
)
UPSERT_FILE = (
    "INSERT INTO report_files (report_id, relpath, size, sha256, upload_id, principal, "
    "published) VALUES (?,?,?,?,?,?,?) ON CONFLICT (report_id, relpath) DO UPDATE SET "
    "size = excluded.size, sha256 = excluded.sha256, upload_id = excluded.upload_id, "
    "principal = excluded.principal, published = excluded.published"
)
REFRESH_TOTALS = (
    "UPDATE reports SET file_count = (SELECT count(id) FROM report_files WHERE report_id = ?1), "
    "total_bytes = (SELECT coalesce(sum(size), 0) FROM report_files WHERE report_id = ?1), "
    "updated = ?2 WHERE id = ?1"
)
MARK_PUBLISHED = (
    "UPDATE uploads SET state = 'published', sha256 = ?, finished = ?, report_id = ?, "
    "error = NULL WHERE id = ?"
)


class LeanReportHooks(TusHooks):
    """The required steps of a report upload; see the module's docstring."""

    publishes_finished_uploads = True

    def __init__(self, settings: Settings, store: FileStore) -> None:
        self.settings = settings
        self.store = store
        self.database = str(settings.data_dir / "dqrxfer.sqlite")
        self.locks = settings.data_dir / "lean-locks"
        self.locks.mkdir(parents=True, exist_ok=True)
        self.local = threading.local()
        self.targets: dict[str, contract.ReportUpload] = {}
        self.log_fd: int | None = None

    def connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self.local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.database, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=30000")
            self.local.connection = connection
        return connection

    def pre_create(self, info: UploadInfo) -> None:
        target = validate_for_settings(info.metadata, self.settings)
        info.metadata = {**info.metadata, **target.to_metadata()}
        self.local.target = target

    def post_create(self, info: UploadInfo) -> None:
        target: contract.ReportUpload = self.local.target
        self.targets[info.id] = target
        connection = self.connection()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            INSERT_UPLOAD,
            (
                info.id,
                info.owner,
                target.project,
                target.graceid,
                target.site,
                target.revision,
                target.subdir,
                target.filename,
                target.kind,
                target.sha256,
                info.length,
                datetime.now(UTC).isoformat(),
            ),
        )
        connection.execute("COMMIT")

    def post_finish(self, info: UploadInfo) -> dict[str, str]:
        target = self.targets.pop(info.id, None) or validate_for_settings(
            info.metadata, self.settings
        )
        relpath = target.report_relpath
        bucket = hashlib.sha256(relpath.encode()).hexdigest()[:2]
        lock = os.open(self.locks / f"report-{bucket}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return {"Dqr-Report-Url": self._finalize(info, target, relpath)}
        finally:
            os.close(lock)

    def _finalize(self, info: UploadInfo, target: contract.ReportUpload, relpath: str) -> str:
        connection = self.connection()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(TAKE_PLACE, (info.id,))
        connection.execute("COMMIT")
        digest = self.store.known_sha256(info.id)
        self.store.forget_sha256(info.id)
        project = self.settings.projects[target.project]
        report_dir = project.reports_root / relpath
        directory = report_dir / target.subdir if target.subdir else report_dir
        os.makedirs(directory, exist_ok=True)
        hidden = directory / f".{target.filename}.{secrets.token_hex(6)}.tmp"
        os.link(self.store.data_path(info.id), hidden)
        os.chmod(hidden, 0o644)
        os.replace(hidden, directory / target.filename)
        durable = self.settings.durable
        if durable:
            flushed = os.open(directory, os.O_RDONLY)
            os.fsync(flushed)
            os.close(flushed)
        size = info.length or 0
        now = datetime.now(UTC).isoformat()
        name = f"{target.subdir}/{target.filename}" if target.subdir else target.filename
        identity = (target.graceid, target.project, target.site, target.revision)
        connection.execute("BEGIN IMMEDIATE")
        found = connection.execute(SELECT_REPORT, identity).fetchone()
        file_row = (name, size, digest, info.id, info.owner, now)
        if found is None:
            event = connection.execute(SELECT_EVENT, (target.graceid,)).fetchone()
            event_id = (
                event[0]
                if event
                else connection.execute(INSERT_EVENT, (target.graceid, now)).lastrowid
            )
            url = project.report_url(relpath)
            report_id = connection.execute(
                INSERT_REPORT, (event_id, *identity[1:], relpath, url, now, now, size)
            ).lastrowid
            connection.execute(UPSERT_FILE, (report_id, *file_row))
        else:
            report_id, url = found
            connection.execute(UPSERT_FILE, (report_id, *file_row))
            connection.execute(REFRESH_TOTALS, (report_id, now))
        connection.execute(MARK_PUBLISHED, (digest, now, report_id, info.id))
        connection.execute("COMMIT")
        if durable:
            if self.log_fd is None:
                self.log_fd = os.open(self.database + "-wal", os.O_RDONLY)
            os.fdatasync(self.log_fd)
        return str(url)


def create_app(data_dir: Path, config: Path | None) -> Flask:
    settings = load_settings(config, data_dir)
    store = FileStore(settings.uploads_dir, fsync=settings.fsync, running_sha256=True)
    locker = FileLocker(settings.uploads_dir / "locks")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = None
    hooks = LeanReportHooks(settings, store)
    app.register_blueprint(make_blueprint(store, locker, hooks=hooks, options=TusOptions()))
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--config", type=Path, help="the schema must exist (db upgrade)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    options = gunicorn_options("127.0.0.1", args.port, args.workers, args.threads)
    FlaskServer(lambda: create_app(args.data_dir, args.config), options).run()


if __name__ == "__main__":
    main()
