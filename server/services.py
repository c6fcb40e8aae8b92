"""The server's services, built in one place.

:func:`build_services` makes the database, the upload store, the locker, the
tus hooks (the reports domain, with authorization in front) and the
:class:`~.tus.Uploads` that ties them together.  The web app
(:func:`.app.create_app`), housekeeping (``dqrxfer-server cleanup``) and crash
recovery all use it, so each of them follows the same rules with the same
parts; only the web app adds HTTP on top.

Inside a request (or with the app at hand) :func:`services` returns them,
typed, instead of a string key into ``app.extensions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .auth.hooks import authorizing
from .config import Settings
from .db import Database
from .db.migrate import check_up_to_date, upgrade
from .reports.hooks import ReportHooks
from .tus import FileLocker, FileStore, Locker, TusOptions, Uploads
from .tus.metrics import tus_metrics

if TYPE_CHECKING:  # Flask only where there is an app: ``cleanup`` builds these without
    from flask import Flask
    from flask.sansio.app import App

#: Where an app keeps its :class:`Services` (read it with :func:`services`).
EXTENSION = "dqrxfer.services"


@dataclass(frozen=True)
class Services:
    """Everything an upload passes through on its way to the report tree."""

    settings: Settings
    database: Database
    store: FileStore
    locker: Locker
    #: the reports domain's hooks (without the authorization in front)
    reports: ReportHooks
    #: the tus rules over store, locker and the authorizing hooks
    uploads: Uploads

    def close(self) -> None:
        """Release the database's connections (for commands that end)."""
        self.database.dispose()


def build_services(settings: Settings, *, check_schema: bool = True) -> Services:
    """Build the services ``settings`` describe.

    ``check_schema``: upgrade the schema when ``auto_upgrade`` is set, then
    refuse (:class:`~.db.migrate.SchemaOutOfDate`) a database behind the code.
    ``serve`` checks once before the workers start and they skip it.
    """
    database = open_database(settings, check_schema=check_schema)
    # Every payload's SHA-256 is recorded and verified: computed as it arrives.
    store = FileStore(settings.uploads_dir, fsync=settings.fsync, running_sha256=True)
    locker = make_locker(settings, database)
    reports = ReportHooks(settings, database, store, locker)
    hooks = authorizing(reports, settings.auth, list(settings.projects), list(settings.sites))
    options = TusOptions(
        max_size=settings.max_upload_size,
        expiry=settings.upload_expiry,
        finished_retention=settings.finished_upload_retention,
        read_timeout=settings.read_timeout,
        take_over=settings.lock_take_over,
        max_unfinished_bytes=settings.max_unfinished_bytes,
    )
    uploads = Uploads(store, locker, hooks, options, tus_metrics())
    return Services(settings, database, store, locker, reports, uploads)


def open_database(settings: Settings, *, check_schema: bool = True) -> Database:
    """The database of ``settings`` (its data directory made if missing);
    ``check_schema`` as for :func:`build_services`."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url)
    if check_schema:
        try:
            if settings.auto_upgrade:
                upgrade(database.engine)
            check_up_to_date(database.engine)
        except BaseException:
            database.dispose()
            raise
    return database


def make_locker(settings: Settings, database: Database) -> Locker:
    """PostgreSQL advisory locks when the database is PostgreSQL (several
    hosts share it), else file locks in the uploads directory."""
    if database.engine.dialect.name == "postgresql":
        from .tus.pglocker import PostgresLocker

        return PostgresLocker(
            database.engine,
            timeout=settings.lock_timeout,
            dead_host_timeout=settings.lock_dead_host_timeout,
        )
    return FileLocker(settings.uploads_dir / "locks", timeout=settings.lock_timeout)


def install(app: Flask, built: Services) -> None:
    """Make ``built`` the services of ``app``."""
    app.extensions[EXTENSION] = built


def services(app: App | None = None) -> Services:
    """The services of ``app`` (default: the current app)."""
    from flask import current_app

    found = (app or current_app).extensions[EXTENSION]
    assert isinstance(found, Services), "the app was not built by create_app"
    return found
