"""The report commands of ``dqrxfer-server``: ``reports list|show|register``,
``reindex``, and the options of the staging part of ``cleanup`` (whose output
is :mod:`dqrxfer.server.housekeeping`'s).  Argument parsing and output only;
the work is in :mod:`.admin`, imported by the functions that run a command:
``dqrxfer-server`` builds its parser from this module before it knows
whether the command needs the database (server/cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from ..db import Database

AddConfigOptions = Callable[[argparse.ArgumentParser], None]

LIST_COLUMNS = ["graceid", "site", "revision", "project", "file_count", "bytes", "updated", "path"]
#: Staging directories without a lock file are only removed past this age.
DEFAULT_STAGING_AGE = 3600.0


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config_options: AddConfigOptions,
) -> None:
    reports = commands.add_parser("reports", help="list, show and register reports")
    actions = reports.add_subparsers(dest="reports_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="reports, most recently updated first")
    add_config_options(listing)
    listing.add_argument("--graceid", help="only this event")
    listing.add_argument("--site", help="only this site")
    listing.add_argument("--project", help="only this project")
    listing.add_argument(
        "--since",
        metavar="WHEN",
        help="updated since a date/time (2026-11-27T10:00) or an age (7d, 12h)",
    )
    listing.add_argument("--limit", type=int, default=100, help="at most N reports (0: all)")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")

    show = actions.add_parser("show", help="one report and its files, or the reports of one event")
    add_config_options(show)
    show.add_argument(
        "report",
        metavar="GRACEID_SITE_REVISION|GRACEID",
        help="a report (S230518h_llo_1), or an event (S230518h): its reports",
    )
    show.add_argument("--project", help="the project (when the report exists in several)")
    show.add_argument("--json", action="store_true", help="JSON instead of text")

    register = actions.add_parser(
        "register",
        help="record a report produced here without a transfer (the old --set-dir)",
        description=(
            "Record a report produced at CIT without a transfer.  If --path is the report's "
            "directory in the project's tree it is indexed where it is; otherwise its content "
            "is published into the report like one more upload (checked by the archive rules)."
        ),
    )
    add_config_options(register)
    register.add_argument("--project", help="the project (required when several are configured)")
    register.add_argument("--graceid", required=True)
    register.add_argument("--site", required=True)
    register.add_argument("--revision", required=True)
    register.add_argument("--path", required=True, type=Path, help="directory holding the report")
    register.add_argument("--subdir", default="", help="publish under this sub-directory")

    reindex = commands.add_parser(
        "reindex",
        help="scan the report trees into the database (files are not changed)",
    )
    add_config_options(reindex)
    reindex.add_argument("--project", action="append", help="only this project (repeatable)")
    reindex.add_argument("--rehash", action="store_true", help="hash every file again")
    reindex.add_argument("--dry-run", action="store_true", help="report, change nothing")


def add_cleanup_options(cleanup: argparse.ArgumentParser) -> None:
    cleanup.add_argument(
        "--staging-age",
        type=float,
        default=DEFAULT_STAGING_AGE,
        metavar="SECONDS",
        help="remove unlocked staging directories older than this (default 3600)",
    )


@contextmanager
def _database(settings: Settings) -> Iterator[Database]:
    from ..db import Database, migrate

    database = Database(settings.database_url)
    try:
        migrate.check_up_to_date(database.engine)
        yield database
    finally:
        database.dispose()


#: What a table shows for a value that is not there (None).
MISSING = "-"


def _cell(value: object) -> str:
    return MISSING if value is None else str(value)


def _print_table(rows: list[dict[str, object]], columns: list[str]) -> None:
    cells = [[_cell(row[column]) for column in columns] for row in rows]
    widths = [
        max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)
    ]
    for line in [columns, *cells]:
        padded = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        print("  ".join(padded).rstrip())


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``reports ...`` or ``reindex``; exit status 0, 2 with a message on
    an option's value, or 1 with a message on what could not be done."""
    from . import admin

    try:
        with _database(settings) as database:
            if args.command == "reindex":
                return _reindex(args, settings, database)
            if args.reports_command == "list":
                return _list(args, database)
            if args.reports_command == "show":
                return _show(args, settings, database)
            return _register(args, settings, database)
    except admin.AdminError as error:
        print(f"dqrxfer-server: {error}", file=sys.stderr)
        return 2 if isinstance(error, admin.OptionError) else 1


def _list(args: argparse.Namespace, database: Database) -> int:
    from . import admin

    since = admin.parse_since(args.since) if args.since else None
    site = args.site.lower() if args.site else None
    with database.session() as session:
        found = admin.list_reports(
            session, args.graceid, site, args.project, since, args.limit or None
        )
        rows = [admin.report_summary(report) for report in found]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        _print_table(rows, LIST_COLUMNS)
    else:
        print("no reports", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace, settings: Settings, database: Database) -> int:
    from . import admin

    if admin.is_graceid(args.report):
        return _show_event(args, database)
    with database.session() as session:
        found = admin.find_reports(session, args.report, settings, args.project)
        if not found:
            raise admin.AdminError(f"{args.report}: no such report")
        if len(found) > 1:
            projects = ", ".join(report.project for report in found)
            raise admin.AdminError(
                f"{args.report}: in several projects ({projects}): choose one with --project"
            )
        report = found[0]
        summary = admin.report_summary(report)
        files = [admin.file_summary(row) for row in sorted(report.files, key=lambda r: r.relpath)]
    if args.json:
        print(json.dumps({**summary, "files": files}, indent=2))
        return 0
    for key, value in summary.items():
        print(f"{key}: {_cell(value)}")
    if files:
        print()
        _print_table(files, ["path", "size", "sha256", "upload", "principal", "published"])
    return 0


def _show_event(args: argparse.Namespace, database: Database) -> int:
    """``reports show <graceid>``: the event's reports, as ``reports list`` shows them."""
    from . import admin

    with database.session() as session:
        found = admin.list_reports(session, args.report, project=args.project, limit=None)
        rows = [admin.report_summary(report) for report in found]
    if not rows:
        where = f" in project {args.project}" if args.project else ""
        raise admin.AdminError(f"{args.report}: no reports of this event{where}")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, LIST_COLUMNS)
    return 0


def _register(args: argparse.Namespace, settings: Settings, database: Database) -> int:
    from . import admin

    done = admin.register(
        settings,
        database,
        args.project,
        args.graceid,
        args.site,
        args.revision,
        args.path,
        args.subdir,
    )
    how = "indexed in place" if done.in_place else "published"
    print(f"{how}: {done.files} file(s); report {done.url}")
    return 0


def _reindex(args: argparse.Namespace, settings: Settings, database: Database) -> int:
    from . import admin

    for name in args.project or []:
        if name not in settings.projects:
            raise admin.OptionError(f"--project: {name} is not configured")
    summary = admin.reindex(settings, database, args.project, args.rehash, args.dry_run)
    for line in summary.skipped:
        print(f"skipped {line}", file=sys.stderr)
    for path in summary.missing:
        print(f"in the database but not on disk: {path}", file=sys.stderr)
    verb = "would index" if args.dry_run else "indexed"
    print(
        f"{verb}: {summary.new} new, {summary.updated} updated, {summary.unchanged} unchanged "
        f"report(s); {summary.hashed} file(s) hashed, {summary.removed} row(s) of missing files "
        f"dropped; {len(summary.skipped)} skipped"
    )
    return 0
