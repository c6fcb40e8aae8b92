"""``dqrxfer-server``: serve the app and operate its database.

A command imports what it needs when it runs: the configuration is read and
checked, and ``--help`` or a mistake answered, before SQLAlchemy, the
database models, Flask or the app are imported (about half a second of CPU
at every start otherwise).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from dqrxfer import __version__

from .auth.settings import check_listen_address, with_overrides
from .config import ConfigError, Settings, load_settings
from .db import migrate
from .db.presence import Missing, require_database
from .reports import commands as report_commands

if TYPE_CHECKING:
    from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("dqrxfer.server")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (default: $DQRXFER_CONFIG, else embedded default)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="data directory (default: ./dqrxfer-data or the config's data_dir)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dqrxfer-server", description="Central server of dqrxfer: receive and publish DQRs."
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server under gunicorn")
    _add_config_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    serve.add_argument(
        "--workers",
        type=int,
        help="gunicorn worker processes (default 4, or the gunicorn config's)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        help="threads per worker: requests served at once (default 320, or the gunicorn config's)",
    )
    serve.add_argument(
        "--gunicorn-config",
        metavar="FILE",
        help="gunicorn settings file (e.g. ops/gunicorn.conf.py); --host/--port still win",
    )
    serve.add_argument(
        "--auth",
        choices=("none", "gssapi", "remote-user"),
        help="authentication mode (default: the config's auth.mode, else none)",
    )
    serve.add_argument("--keytab", metavar="FILE", help="gssapi: the service keytab")
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="ADDR",
        help="remote-user: address or network of the authenticating proxy (repeatable)",
    )

    cleanup = commands.add_parser(
        "cleanup",
        help="remove expired uploads, and published ones past their retention, with their data; "
        "finish what a crash left undone",
    )
    _add_config_options(cleanup)
    cleanup.add_argument(
        "--dry-run", action="store_true", help="list expired uploads, remove nothing"
    )
    report_commands.add_cleanup_options(cleanup)
    report_commands.add_commands(commands, _add_config_options)

    db = commands.add_parser("db", help="database schema (Alembic) operations")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    for name, text in (
        ("upgrade", "upgrade the schema (default: to head)"),
        ("downgrade", "downgrade the schema to REVISION"),
        ("current", "show the schema revision of the database"),
        ("history", "list the schema revisions"),
        ("backup", "write a backup of the database to FILE (stop the server for upgrades)"),
        ("restore", "replace the database with the backup FILE (stop the server first)"),
    ):
        sub = db_commands.add_parser(name, help=text)
        _add_config_options(sub)
        if name == "upgrade":
            sub.add_argument("revision", nargs="?", default="head")
        elif name == "downgrade":
            sub.add_argument("revision")
        elif name in ("backup", "restore"):
            sub.add_argument("file", metavar="FILE")
            sub.add_argument(
                "tool_args",
                nargs="*",
                metavar="ARG",
                help="PostgreSQL only: extra pg_dump / pg_restore arguments, after a --",
            )
    return parser


#: The commands that may create the data directory and the database
#: (``serve`` only where it upgrades its own schema: ``auto_upgrade``).  Every
#: other one uses what is there: pointed at no database (a mistyped
#: ``--data-dir``), it says so and creates nothing.
CREATING_COMMANDS = frozenset({("serve", None), ("db", "upgrade"), ("db", "restore")})


#: ``db history`` lists the code's revisions: it opens no database at all.
NO_DATABASE_COMMANDS = frozenset({("db", "history")})


def needs_existing_database(args: argparse.Namespace, settings: Settings) -> bool:
    command = (args.command, getattr(args, "db_command", None))
    if command == ("serve", None):
        # Without auto_upgrade a new database would only be refused as behind the code.
        return not settings.auto_upgrade
    return command not in CREATING_COMMANDS | NO_DATABASE_COMMANDS


def _settings(args: argparse.Namespace) -> Settings:
    """The command's settings; for a command that may not create the database,
    :class:`~.db.presence.Missing` when it is not there."""
    settings = load_settings(args.config, args.data_dir)
    if needs_existing_database(args, settings):
        require_database(settings.database_url)
    return settings


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from .auth.guard import preflight
    from .wsgi import GunicornServer, ensure_address_free, gunicorn_options

    if args.gunicorn_config and not os.path.isfile(args.gunicorn_config):
        raise ConfigError(f"--gunicorn-config: no such file: {args.gunicorn_config}")
    auth = with_overrides(settings.auth, args.auth, args.keytab, args.trusted_proxy)
    check_listen_address(auth, args.host)
    preflight(auth)  # each raises AuthConfigError, a ConfigError
    settings = replace(settings, auth=auth)
    try:
        ensure_address_free(args.host, args.port)
    except OSError as error:
        raise ConfigError(
            f"--host/--port: cannot listen on {args.host}:{args.port}: {error.strerror or error} "
            "(is another server running there?)"
        ) from None
    # The workers skip the check.  It runs in a child process: the master
    # keeps what it imports and shares it with every worker, and the check
    # imports the database layer and, when it upgrades, Alembic (about 8 MiB
    # with Mako and Pygments), which nothing else in serve needs.
    status = in_child(lambda: _check_database(settings))
    if status:
        return status
    log.info(
        "settings: %s; data directory %s; auth %s",
        settings.source,
        settings.data_dir,
        settings.auth.mode,
    )
    metrics_dir = _metrics_directory()
    _raise_open_files_limit()
    master = os.getpid()
    try:
        GunicornServer(
            settings,
            gunicorn_options(args.host, args.port, args.workers, args.threads),
            args.gunicorn_config,
        ).run()
    finally:
        # A worker ends by SystemExit through this frame too (gunicorn forks
        # it inside run()): only the master, when it stops, removes the
        # directory the other workers and their replacements still write to.
        if metrics_dir is not None and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _check_database(settings: Settings) -> int:
    """Upgrade the schema if ``auto_upgrade`` is set, else refuse one behind the code."""
    from .services import open_database

    open_database(settings).dispose()
    return 0


def in_child(action: Callable[[], int]) -> int:
    """Run ``action`` in a forked child process and return its exit status;
    an error it raises is said there as :func:`main` says it (the status
    then that of the error).  What it imports stays out of this process."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    child = os.fork()
    if child == 0:
        status = 1
        try:
            status = handled(action)
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os._exit(status)
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    return code if code >= 0 else 1


def _raise_open_files_limit() -> None:
    """Let the workers open as many files as the system allows this user.

    Every upload in flight holds its connection, its data file and its lock
    file open: a thousand of them need more than the usual soft limit of
    1024 descriptors (systemd's ``LimitNOFILE`` sets both limits)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, 65536) if hard == resource.RLIM_INFINITY else hard
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _metrics_directory() -> str | None:
    """Give the workers a fresh directory for their Prometheus values
    (prometheus_client's multiprocess mode), unless the operator set one."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    directory = tempfile.mkdtemp(prefix="dqrxfer-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return directory


def cmd_cleanup(args: argparse.Namespace, settings: Settings) -> int:
    """Both parts of housekeeping: uploads (tus), stale staging (reports)."""
    from . import housekeeping

    return housekeeping.run(settings, args.dry_run, args.staging_age)


def cmd_db_backup(args: argparse.Namespace, settings: Settings) -> int:
    from .db import backup

    try:
        if args.db_command == "backup":
            backup.backup(settings.database_url, args.file, args.tool_args)
            print(f"database backed up to {args.file}")
        else:
            backup.restore(settings.database_url, args.file, args.tool_args)
            print(f"database restored from {args.file}")
    except backup.BackupError as error:
        print(f"dqrxfer-server: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    if args.db_command in ("backup", "restore"):
        return cmd_db_backup(args, settings)
    if args.db_command == "history":  # the code's revisions: no database needed
        print("\n".join(migrate.history()))
        return 0
    from .db import Database

    if args.db_command == "upgrade":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url)
    try:
        if args.db_command == "upgrade":
            migrate.upgrade(database.engine, args.revision)
            print(f"database at revision {migrate.current_revision(database.engine)}")
        elif args.db_command == "downgrade":
            migrate.downgrade(database.engine, args.revision)
            print(f"database at revision {migrate.current_revision(database.engine) or '<base>'}")
        elif args.db_command == "current":
            current = migrate.current_revision(database.engine)
            head = migrate.head_revision()
            state = "up to date" if current == head else f"behind (head is {head})"
            print(f"{current or '<empty>'} ({state})")
    finally:
        database.dispose()
    return 0


#: Loggers whose INFO lines are for ``-v`` only: Alembic's "Context impl
#: SQLiteImpl." and "Will assume non-transactional DDL." on every command.
QUIET_LOGGERS = ("alembic",)


def configure_logging(verbose: int) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    return handled(lambda: run_command(args))


def run_command(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.command == "serve":
        return cmd_serve(args, settings)
    if args.command == "cleanup":
        return cmd_cleanup(args, settings)
    if args.command in ("reports", "reindex"):
        return report_commands.run(args, settings)
    return cmd_db(args, settings)


def handled(action: Callable[[], int]) -> int:
    """``action``'s exit status; for an error it raises that is the
    operator's to mend, the error's status, the error said in one line."""
    try:
        return action()
    except ConfigError as error:
        print(f"dqrxfer-server: configuration error: {one_line(error)}", file=sys.stderr)
        return 2
    except Missing as error:
        print(f"dqrxfer-server: {error}", file=sys.stderr)
        return 2
    except migrate.SchemaOutOfDate as error:
        print(f"dqrxfer-server: {error}", file=sys.stderr)
        return 1
    except environment_errors() as error:
        # The settings are valid but the place they name is not usable (a
        # directory that cannot be made, a database that cannot be reached).
        log.debug("details", exc_info=True)
        print(f"dqrxfer-server: {environment_problem(error)}", file=sys.stderr)
        return 1


def environment_errors() -> tuple[type[OSError | SQLAlchemyError], ...]:
    """The errors :func:`handled` says are the environment's: OSError, and
    SQLAlchemy's once imported (none can be raised before)."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is None:
        return (OSError,)
    return (OSError, sqlalchemy_exc.SQLAlchemyError)


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def environment_problem(error: OSError | SQLAlchemyError) -> str:
    """One line on what failed: the database's own message (never the URL,
    which may hold a password), or the operating system's with the file."""
    if isinstance(error, OSError):
        return one_line(error)
    from sqlalchemy.exc import DBAPIError

    if isinstance(error, DBAPIError) and error.orig is not None:
        return f"cannot use the database (database_url): {one_line(error.orig)}"
    return f"cannot use the database (database_url): {type(error).__name__}"


if __name__ == "__main__":
    sys.exit(main())
