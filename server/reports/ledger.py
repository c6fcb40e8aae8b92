"""The rows an upload's finalization reads and writes, as SQLAlchemy Core
statements on one connection.

This is the path every report upload takes, many times a second when small
files arrive, so it avoids the ORM's per-transaction machinery (a session,
identity map, unit-of-work flush) and builds its statements once, at import,
with named parameters: SQLAlchemy then finds each one compiled in its cache
without rebuilding or re-keying it.  Those an upload runs every time are
:class:`~..db.prepared.Prepared`: on SQLite they run on the driver's cursor,
without SQLAlchemy's execution path (most of their cost here).  It is also
the only writer of the rows of events, reports and their files: the
operator commands (``reports register``, ``reindex``) record what they
publish or find with :func:`record_report`, in their session's transaction.
Every function is idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from ..db.models import Event, Report, ReportFile, SupersededPath, Upload
from ..db.prepared import Prepared

# Declarative classes type __table__ as any FromClause; these are Tables.
_events = cast(Table, Event.__table__)
_reports = cast(Table, Report.__table__)
_files = cast(Table, ReportFile.__table__)
_uploads = cast(Table, Upload.__table__)
_superseded = cast(Table, SupersededPath.__table__)
_earlier = _uploads.alias("earlier")

#: Rows per ``IN (...)`` list (SQLite limits the number of bound parameters).
_CHUNK = 500

# Parameter names differ from column names: SQLAlchemy reserves those for SET
# and VALUES clauses.
_INSERT_UPLOAD = insert(_uploads)
_SELECT_OUTCOME = (
    select(_uploads.c.state, _uploads.c.error, _reports.c.url, _uploads.c.finalize_order)
    .select_from(_uploads.outerjoin(_reports, _reports.c.id == _uploads.c.report_id))
    .where(_uploads.c.id == bindparam("upload_key"))
)


def _report_is(events: FromClause, reports: FromClause) -> tuple[ColumnElement[bool], ...]:
    """The report (joined with its event) named by the identity's parameters."""
    return (
        events.c.graceid == bindparam("graceid_key"),
        reports.c.project == bindparam("project_key"),
        reports.c.site == bindparam("site_key"),
        reports.c.revision == bindparam("revision_key"),
    )


def _cut_in_report(uploads: FromClause) -> tuple[ColumnElement[bool], ...]:
    """Uploads of the report the identity's parameters name that have a
    place but are still "receiving" (under the report's lock: cut)."""
    return (
        uploads.c.graceid == bindparam("graceid_key"),
        uploads.c.project == bindparam("project_key"),
        uploads.c.site == bindparam("site_key"),
        uploads.c.revision == bindparam("revision_key"),
        uploads.c.state == "receiving",
        uploads.c.finalize_order.is_not(None),
    )


_REPORT_IDENTITY = _report_is(_events, _reports)
_SELECT_REPORT_PATH = (
    select(_reports.c.path)
    .join(_events, _events.c.id == _reports.c.event_id)
    .where(*_REPORT_IDENTITY)
)
_SELECT_REPORT_FOR_UPDATE = (
    select(_reports.c.id, _reports.c.url)
    .join(_events, _events.c.id == _reports.c.event_id)
    .where(*_REPORT_IDENTITY)
    .with_for_update(of=_reports)
)
_SELECT_EVENT = select(_events.c.id).where(_events.c.graceid == bindparam("graceid_key"))
_INSERT_EVENT = insert(_events)
_INSERT_REPORT = insert(_reports)
_SELECT_FILES = select(_files.c.relpath, _files.c.id, _files.c.size).where(
    _files.c.report_id == bindparam("report_key")
)
_SELECT_NAMED_FILES = _SELECT_FILES.where(
    _files.c.relpath.in_(bindparam("paths_key", expanding=True))
)
_DELETE_FILES = delete(_files).where(_files.c.id.in_(bindparam("ids_key", expanding=True)))
_UPDATE_FILE = update(_files).where(_files.c.id == bindparam("file_key"))
_INSERT_FILE = insert(_files)
_REFRESH_TOTALS = (
    update(_reports)
    .where(_reports.c.id == bindparam("report_key"))
    .values(
        file_count=select(func.count(_files.c.id))
        .where(_files.c.report_id == bindparam("report_key"))
        .scalar_subquery(),
        total_bytes=select(func.coalesce(func.sum(_files.c.size), 0))
        .where(_files.c.report_id == bindparam("report_key"))
        .scalar_subquery(),
        updated=bindparam("when_key"),
    )
)
# A publication's change to the totals, from the rows it inserted, replaced
# and removed: a recount (above) reads every file row of the report, and a
# report grown file by file to 10,000 files took 1.4 ms per upload to recount
# (8.5 ms at 50,000), under the database's write lock.
_ADD_TO_TOTALS = (
    update(_reports)
    .where(_reports.c.id == bindparam("report_key"))
    .values(
        file_count=_reports.c.file_count + bindparam("count_key"),
        total_bytes=_reports.c.total_bytes + bindparam("bytes_key"),
        updated=bindparam("when_key"),
    )
)
# The next place: max() + 1, read from the index.  Within a report the
# finalizations are serialised by its lock, so the places increase there; two
# reports' finalizations may take the same number at once (PostgreSQL), which
# orders nothing that matters.
_TAKE_PLACE = (
    update(_uploads)
    .where(_uploads.c.id == bindparam("upload_key"), _uploads.c.finalize_order.is_(None))
    .values(
        finalize_order=select(func.coalesce(func.max(_earlier.c.finalize_order), 0) + 1)
        .select_from(_earlier)
        .scalar_subquery()
    )
    .returning(_uploads.c.finalize_order)
)
# Under the report's lock: uploads of the report whose finalization was cut.
_SELECT_CUT = select(_uploads.c.id).where(*_cut_in_report(_uploads))
_SELECT_CUT_EARLIER = _SELECT_CUT.where(_uploads.c.finalize_order < bindparam("order_key"))
# The start of a finalization in one statement: the upload's outcome, where
# its report lives, and how many uploads of the report were cut (the lookups
# in the subqueries name their tables by aliases of their own, so that they
# are not correlated with the upload's row).
_existing_report, _existing_event, _cut = (
    _reports.alias("existing"),
    _events.alias("existing_event"),
    _uploads.alias("cut"),
)
_SELECT_START = _SELECT_OUTCOME.add_columns(
    select(_existing_report.c.path)
    .join(_existing_event, _existing_event.c.id == _existing_report.c.event_id)
    .where(*_report_is(_existing_event, _existing_report))
    .scalar_subquery()
    .label("report_path"),
    select(func.count())
    .select_from(_cut)
    .where(*_cut_in_report(_cut))
    .scalar_subquery()
    .label("cut_count"),
)
_SELECT_SUPERSEDED = select(_superseded.c.relpath).where(
    _superseded.c.upload_id == bindparam("upload_key")
)
_INSERT_SUPERSEDED = insert(_superseded)
_DELETE_SUPERSEDED = delete(_superseded).where(_superseded.c.upload_id == bindparam("upload_key"))
_MARK_PUBLISHED = (
    update(_uploads)
    .where(_uploads.c.id == bindparam("upload_key"))
    .values(
        state="published",
        sha256=bindparam("sha256_key"),
        finished=bindparam("when_key"),
        report_id=bindparam("report_key"),
        error=None,
    )
)


# The statements of every upload, run on SQLite's cursor (see Prepared).
_UPLOAD_KEYS = (
    "id",
    "principal",
    "project",
    "graceid",
    "site",
    "revision",
    "subdir",
    "filename",
    "kind",
    "sha256",
    "length",
    "state",
    "created",
)
_FILE_KEYS = ("size", "sha256", "upload_id", "principal", "published")
_FAST_INSERT_UPLOAD = Prepared(_INSERT_UPLOAD, _UPLOAD_KEYS)
_FAST_START = Prepared(_SELECT_START)
_FAST_TAKE_PLACE = Prepared(_TAKE_PLACE)
_FAST_REPORT_FOR_UPDATE = Prepared(_SELECT_REPORT_FOR_UPDATE)
_FAST_SELECT_EVENT = Prepared(_SELECT_EVENT)
_FAST_INSERT_EVENT = Prepared(_INSERT_EVENT, ("graceid", "created"))
_FAST_INSERT_REPORT = Prepared(
    _INSERT_REPORT,
    (
        "event_id",
        "project",
        "site",
        "revision",
        "path",
        "url",
        "created",
        "updated",
        "file_count",
        "total_bytes",
    ),
)
_FAST_INSERT_FILE = Prepared(_INSERT_FILE, ("report_id", "relpath", *_FILE_KEYS))
_FAST_UPDATE_FILE = Prepared(_UPDATE_FILE, _FILE_KEYS)
_FAST_SELECT_ONE_FILE = Prepared(_SELECT_FILES.where(_files.c.relpath == bindparam("path_key")))
_FAST_REFRESH_TOTALS = Prepared(_REFRESH_TOTALS)
_FAST_ADD_TO_TOTALS = Prepared(_ADD_TO_TOTALS)
_FAST_MARK_PUBLISHED = Prepared(_MARK_PUBLISHED)


_BACKDATE_REPORT = (
    update(_reports)
    .where(_reports.c.id == bindparam("report_key"))
    .values(created=bindparam("when_key"), updated=bindparam("when_key"))
)


@dataclass(frozen=True)
class PublishedFile:
    """One file as it now is in a report (path relative to the report directory)."""

    relpath: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class UploadOutcome:
    """What became of an upload, as its row says."""

    state: str
    error: str | None
    report_url: str | None
    finalize_order: int | None = None


def insert_upload(connection: Connection, values: dict[str, object]) -> None:
    """The row of a new upload (``values``: the ``uploads`` columns)."""
    if values.keys() == set(_UPLOAD_KEYS):
        _FAST_INSERT_UPLOAD.execute(connection, values)
    else:
        connection.execute(_INSERT_UPLOAD, values)


def upload_outcome(connection: Connection, upload_id: str) -> UploadOutcome | None:
    """The upload's state, refusal and (published) report URL; None without a row."""
    row = connection.execute(_SELECT_OUTCOME, {"upload_key": upload_id}).first()
    if row is None:
        return None
    return UploadOutcome(row.state, row.error, row.url, row.finalize_order)


def _identity(graceid: str, project: str, site: str, revision: int) -> dict[str, object]:
    return {
        "graceid_key": graceid,
        "project_key": project,
        "site_key": site,
        "revision_key": revision,
    }


def report_path(
    connection: Connection, graceid: str, project: str, site: str, revision: int
) -> str | None:
    """Where an existing report lives (relative to its project's reports root)."""
    return connection.execute(
        _SELECT_REPORT_PATH, _identity(graceid, project, site, revision)
    ).scalar_one_or_none()


@dataclass(frozen=True)
class Start:
    """What a finalization reads first, under the report's lock.

    ``outcome``: the upload's row (None without one); ``report_path``: where
    the report lives if it exists; ``cut``: how many uploads of the report
    have a place but are still "receiving" (finalizations that were cut).
    """

    outcome: UploadOutcome | None
    report_path: str | None
    cut: int


def finalization_start(
    connection: Connection, upload_id: str, graceid: str, project: str, site: str, revision: int
) -> Start:
    """The :class:`Start` of the upload's finalization: one statement when
    the upload has a row (the usual case), two without."""
    identity = _identity(graceid, project, site, revision)
    row = _FAST_START.first(connection, {"upload_key": upload_id, **identity})
    if row is None:
        path = report_path(connection, graceid, project, site, revision)
        return Start(None, path, len(cut_uploads(connection, graceid, project, site, revision)))
    state, error, url, order, path, cut = row
    return Start(UploadOutcome(state, error, url, order), path, int(cut))


@dataclass(frozen=True)
class Place:
    """An upload's place in the order of its report's finalizations.

    ``order``: its number (None without a row); ``superseded``: the paths
    that later uploads of the report published while its own finalization
    was cut (it must leave them alone); ``cut_earlier``: earlier uploads of
    the report whose finalization was cut, which must leave this one's paths
    alone (:func:`supersede`).
    """

    order: int | None
    superseded: frozenset[str]
    cut_earlier: tuple[str, ...]


def take_place(
    connection: Connection,
    upload_id: str,
    outcome: UploadOutcome | None,
    graceid: str,
    project: str,
    site: str,
    revision: int,
    cut: int | None = None,
) -> Place:
    """The upload's place, taken now unless an earlier finalization of it
    took one (``outcome``: its row, read in this transaction).  Call under
    the report's lock, in a write transaction: an upload of the report that
    has a place but is still "receiving" is then one whose finalization was
    cut (it would hold the lock otherwise).  ``cut``: how many such uploads
    the transaction found (:func:`finalization_start`); with none, a first
    finalization does not look for them again."""
    if outcome is None:
        return Place(None, frozenset(), ())
    order = outcome.finalize_order
    superseded: frozenset[str] = frozenset()
    if order is None:
        order = int(_FAST_TAKE_PLACE.scalar(connection, {"upload_key": upload_id}))
        if cut == 0:  # every upload with a place comes before the one taken now
            return Place(order, superseded, ())
    else:  # finalized again: later uploads may have taken some of its paths
        rows = connection.execute(_SELECT_SUPERSEDED, {"upload_key": upload_id})
        superseded = frozenset(rows.scalars())
    earlier = connection.execute(
        _SELECT_CUT_EARLIER,
        {**_identity(graceid, project, site, revision), "order_key": order},
    ).scalars()
    return Place(order, superseded, tuple(earlier))


def cut_uploads(
    connection: Connection, graceid: str, project: str, site: str, revision: int
) -> tuple[str, ...]:
    """Uploads of the report whose finalization began and was cut (call under
    the report's lock): for publications that take no place, such as
    ``reports register``, which come after all of them."""
    rows = connection.execute(_SELECT_CUT, _identity(graceid, project, site, revision))
    return tuple(rows.scalars())


def supersede(connection: Connection, upload_ids: Sequence[str], paths: Sequence[str]) -> None:
    """Record that the uploads ``upload_ids`` (earlier, cut) must leave
    ``paths`` alone: a later upload is about to publish them."""
    rows = [{"upload_id": upload, "relpath": path} for upload in upload_ids for path in paths]
    for start in range(0, len(rows), _CHUNK):
        connection.execute(_INSERT_SUPERSEDED, rows[start : start + _CHUNK])


def superseded_mark(connection: Connection) -> int:
    """The newest superseded-path row's id (0 without any): the rows a caller
    adds after reading it are its own (:func:`withdraw_superseded`)."""
    return int(
        connection.execute(select(func.coalesce(func.max(_superseded.c.id), 0))).scalar_one()
    )


def withdraw_superseded(connection: Connection, upload_ids: Sequence[str], after: int) -> None:
    """Remove the rows recorded for ``upload_ids`` after the mark ``after``: the
    publication that recorded them was refused, so the paths stay theirs.  The
    caller holds the report's lock (nobody else writes rows for its uploads)."""
    connection.execute(
        delete(_superseded).where(
            _superseded.c.upload_id.in_(list(upload_ids)), _superseded.c.id > after
        )
    )


@dataclass(frozen=True)
class ReportChange:
    """Files published into one report (or found there), to be recorded.

    ``upload_id``: the upload that published them (None: an operator
    command); ``removed``: paths of the report whose rows go.
    """

    graceid: str
    project: str
    site: str
    revision: int
    path: str
    url: str
    files: Sequence[PublishedFile]
    removed: Sequence[str]
    upload_id: str | None
    principal: str | None
    when: datetime


@dataclass(frozen=True)
class Publication:
    """One finalization's changes to one report, to be recorded."""

    change: ReportChange
    upload_id: str
    payload_sha256: str
    #: rows of superseded paths to drop (the upload was finalized again)
    clear_superseded: bool = False


def record_report(
    connection: Connection, change: ReportChange, recount: bool = True
) -> tuple[int, str]:
    """Record ``change`` in the open write transaction (on SQLite one that
    began IMMEDIATE): the event and report rows if new, the files' rows and
    the report's totals.  A report created here is inserted with its totals
    (its files, none yet, are not looked up).  An existing report's totals
    are counted again from all its rows (``recount``: the operator commands,
    which may be mending them), or moved by what this change did to the rows
    it touched (the uploads: the same totals, from rows read anyway).
    Returns the report's id and URL."""
    report_id, url, created = _get_or_create_report(connection, change)
    files, size = _record_files(connection, report_id, change, new_report=created)
    if created:
        return report_id, url
    if recount:
        _FAST_REFRESH_TOTALS.execute(connection, {"report_key": report_id, "when_key": change.when})
    else:
        _FAST_ADD_TO_TOTALS.execute(
            connection,
            {
                "report_key": report_id,
                "count_key": files,
                "bytes_key": size,
                "when_key": change.when,
            },
        )
    return report_id, url


def backdate_report(connection: Connection, report_id: int, moment: datetime) -> None:
    """Make a report as old as ``moment`` (created and last updated then):
    a report adopted from the tree is as old as its newest file."""
    connection.execute(_BACKDATE_REPORT, {"report_key": report_id, "when_key": moment})


def record_publication(connection: Connection, publication: Publication) -> str:
    """Record a publication in the open write transaction (on SQLite one that
    began IMMEDIATE: ``Database.transaction(write=True)``): the report's rows
    (:func:`record_report`) and the upload as published.  Returns the
    report's URL."""
    report_id, url = record_report(connection, publication.change, recount=False)
    _FAST_MARK_PUBLISHED.execute(
        connection,
        {
            "upload_key": publication.upload_id,
            "sha256_key": publication.payload_sha256,
            "when_key": publication.change.when,
            "report_key": report_id,
        },
    )
    if publication.clear_superseded:
        connection.execute(_DELETE_SUPERSEDED, {"upload_key": publication.upload_id})
    return url


def _get_or_create_report(connection: Connection, change: ReportChange) -> tuple[int, str, bool]:
    """The report's id and URL, and whether it was created here (then with
    the totals of ``change.files``, whose paths a report's unique constraint
    keeps distinct)."""
    identity = _identity(change.graceid, change.project, change.site, change.revision)
    row = _FAST_REPORT_FOR_UPDATE.first(connection, identity)
    if row is not None:
        return int(row[0]), row[1], False
    event_id = _get_or_create_event(connection, change.graceid, change.when)
    values = {
        "event_id": event_id,
        "project": change.project,
        "site": change.site,
        "revision": change.revision,
        "path": change.path,
        "url": change.url,
        "created": change.when,
        "updated": change.when,
        "file_count": len(change.files),
        "total_bytes": sum(entry.size for entry in change.files),
    }
    try:
        return _insert_new(connection, _FAST_INSERT_REPORT, values), change.url, True
    except IntegrityError:  # created meanwhile by another finalization (PostgreSQL)
        row = connection.execute(_SELECT_REPORT_FOR_UPDATE, identity).one()
        return row.id, row.url, False


def _get_or_create_event(connection: Connection, graceid: str, when: datetime) -> int:
    event_id = _FAST_SELECT_EVENT.scalar(connection, {"graceid_key": graceid})
    if event_id is not None:
        return int(event_id)
    try:
        return _insert_new(connection, _FAST_INSERT_EVENT, {"graceid": graceid, "created": when})
    except IntegrityError:  # created meanwhile by another finalization (PostgreSQL)
        return int(connection.execute(_SELECT_EVENT, {"graceid_key": graceid}).scalar_one())


def _insert_new(connection: Connection, statement: Prepared, values: dict[str, object]) -> int:
    """Insert a row found missing a moment ago in this transaction; its id.

    On PostgreSQL another transaction may insert the same row meanwhile: the
    insert runs in a savepoint, so that the IntegrityError leaves this
    transaction usable.  SQLite's write transactions here hold the database's
    write lock from BEGIN (IMMEDIATE), so nobody can, and the savepoint's two
    statements are saved.
    """
    if connection.dialect.name == "sqlite":
        return statement.insert(connection, values)
    with connection.begin_nested():
        return statement.insert(connection, values)


def _record_files(
    connection: Connection, report_id: int, change: ReportChange, new_report: bool = False
) -> tuple[int, int]:
    """Insert or replace the files' rows and drop the removed paths' rows;
    return how many rows and bytes the report gained (negative: lost).

    Only the rows of the paths concerned are read when they are few (a
    report that grows one small upload at a time is not read whole each
    time); all of the report's rows otherwise; none of a ``new_report``'s.
    Bulk statements: an archive of 10,000 files costs a few statements.
    """
    paths = [entry.relpath for entry in change.files] + list(change.removed)
    existing: dict[str, tuple[int, int]] = {}  # path: (row id, size)
    if new_report:
        pass
    elif len(paths) == 1:  # a single file's upload
        found = _FAST_SELECT_ONE_FILE.rows(
            connection, {"report_key": report_id, "path_key": paths[0]}
        )
        existing = {relpath: (file_id, size) for relpath, file_id, size in found}
    else:
        if len(paths) <= _CHUNK:
            query = connection.execute(
                _SELECT_NAMED_FILES, {"report_key": report_id, "paths_key": paths}
            )
        else:
            query = connection.execute(_SELECT_FILES, {"report_key": report_id})
        existing = {row.relpath: (row.id, row.size) for row in query}
    removed = [existing[path] for path in change.removed if path in existing]
    gone = [file_id for file_id, _size in removed]
    for start in range(0, len(gone), _CHUNK):
        connection.execute(_DELETE_FILES, {"ids_key": gone[start : start + _CHUNK]})
    values = {
        "upload_id": change.upload_id,
        "principal": change.principal,
        "published": change.when,
    }
    updates = [
        {
            "file_key": existing[entry.relpath][0],
            "size": entry.size,
            "sha256": entry.sha256,
            **values,
        }
        for entry in change.files
        if entry.relpath in existing
    ]
    inserts = [
        {
            "report_id": report_id,
            "relpath": entry.relpath,
            "size": entry.size,
            "sha256": entry.sha256,
            **values,
        }
        for entry in change.files
        if entry.relpath not in existing
    ]
    if updates:
        _FAST_UPDATE_FILE.execute_many(connection, updates)
    if inserts:
        _FAST_INSERT_FILE.execute_many(connection, inserts)
    # What the rows replaced and removed held, against what the files now hold.
    before = sum(existing[entry.relpath][1] for entry in change.files if entry.relpath in existing)
    before += sum(size for _file_id, size in removed)
    return len(inserts) - len(removed), sum(entry.size for entry in change.files) - before
