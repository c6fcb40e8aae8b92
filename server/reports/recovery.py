"""Crash recovery: finish every upload that was received whole but never published.

Each server worker starts :func:`start_recovery` once it is forked from the
master that built the app (``dqrxfer.server.wsgi``; with the hooks and uploads
of :func:`dqrxfer.server.services.build_services`).
Only one process at a time does the work (a non-blocking flock on
``<data_dir>/recovery.lock``; the others skip).  The uploads the database
still calls "receiving" are handed to the tus layer's own recovery, which
takes the upload's lock without waiting (a busy upload is being finished by
whoever holds it), re-reads its state and runs ``post_finish`` at most once
more: a worker still finalizing an upload, or a client re-sending its last
PATCH, never races recovery into publishing twice.  Recovery also removes
staging directories left by finalizations that died.

An upload already marked completed (``<id>.done``) whose row still says
"receiving" is finalized again too, under its lock: the commit recording its
publication was lost (a power loss with the database's commit not yet on disk,
or a database restored from an older backup) while the rename survived.
Uploads are finished in the order their finalizations began (those that never
began last, oldest first), so that an earlier one publishes before a later one
of the same report; either way a later upload's paths are kept
(:mod:`.supersession`).
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select

from ..db.models import Upload, utcnow
from ..tus.errors import TusError, brief, is_out_of_space
from ..tus.lifecycle import Uploads
from .hooks import ReportHooks
from .staging import Staging, lock_file, unlock_file

log = logging.getLogger("dqrxfer.reports")


def recover(hooks: ReportHooks, uploads: Uploads) -> int:
    """Finish pending uploads; return how many were published (0 if another process does)."""
    settings = hooks.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = lock_file(settings.data_dir / "recovery.lock", timeout=None)
    if fd is None:
        log.info("recovery: another process is recovering")
        return 0
    try:
        for project in settings.projects.values():
            staging = Staging(project.staging, project.reports_root)
            if staging.work.is_dir():
                staging.remove_stale()
        return _finish_pending(hooks, uploads)
    finally:
        unlock_file(fd)


def _finish_pending(hooks: ReportHooks, uploads: Uploads) -> int:
    # Listed with Core, not the ORM: a worker's first ORM query sets up the
    # ORM in pages of its own (about 5 MiB), and with nothing to recover the
    # worker that runs this at start would hold them for nothing.
    table = Upload.__table__.c
    with hooks.database.transaction() as connection:
        pending = list(
            connection.scalars(
                select(table.id)
                .where(table.state == "receiving")
                .order_by(table.finalize_order.asc().nulls_last(), table.created, table.id)
            )
        )
    published = 0
    for upload_id in pending:
        try:
            info = uploads.store.get(upload_id)
        except TusError:
            _mark_gone(hooks, upload_id)
            continue
        try:
            if info.completed:
                done = _finalize_again(hooks, uploads, upload_id)
            elif info.finished or info.is_final:
                done = uploads.recover(info).completed
            else:
                continue
        except Exception:
            log.exception("recovery: upload %s failed", upload_id)
            continue
        if done:
            published += 1
            log.info("recovery: finished upload %s", upload_id)
    return published


def _finalize_again(hooks: ReportHooks, uploads: Uploads, upload_id: str) -> bool:
    """Finalize a completed upload whose publication the database lacks
    (under its lock; skipped if someone holds it: a client re-sending its last
    PATCH finalizes it the same way)."""
    try:
        with uploads.locked(upload_id, timeout=0, measured=False):
            if _state(hooks, upload_id) != "receiving":
                return False
            info = uploads.store.get(upload_id)
            log.warning("recovery: upload %s is completed but not recorded as published", upload_id)
            uploads.finish(info)
    except TusError as error:
        log.info("recovery: upload %s not finalized again now: %s", upload_id, error.message)
        return False
    return _state(hooks, upload_id) == "published"


def _state(hooks: ReportHooks, upload_id: str) -> str | None:
    with hooks.database.session() as session:
        row = session.get(Upload, upload_id)
        return None if row is None else row.state


def _mark_gone(hooks: ReportHooks, upload_id: str) -> None:
    with hooks.database.session(write=True) as session:
        row = session.get(Upload, upload_id)
        if row is not None and row.state == "receiving":
            row.state = "expired"
            row.error = "the upload's data no longer exists"
            row.finished = utcnow()


def start_recovery(hooks: ReportHooks, uploads: Uploads) -> threading.Thread:
    """Run :func:`recover` in a background thread of this worker."""

    def run() -> None:
        try:
            recover(hooks, uploads)
        except Exception as error:
            if not is_out_of_space(error):
                log.exception("recovery failed")
                return
            # The worker's first connection may be opened here, on a disk
            # filled since the master checked the schema: not a fault of the
            # server's.  A pending upload is finished by the next request for
            # it (a HEAD, the client's last PATCH again), or at the next start.
            log.warning("recovery skipped: out of storage space (%s)", brief(error))

    thread = threading.Thread(target=run, name="dqrxfer-recovery", daemon=True)
    thread.start()
    return thread
