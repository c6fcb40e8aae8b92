"""What every dqrxfer command shares: -v/-q/-V, the LVK logging style, the
server and transfer options, building the HTTP session (where credentials
plug in), and the mapping of errors to exit codes (done here, at the edge,
and nowhere else)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from dqrxfer import __version__
from dqrxfer.cli import STARTING
from dqrxfer.errors import DqrxferError, UsageError
from dqrxfer.progress import LogProgress, NullProgress, Progress, TqdmProgress
from dqrxfer.retry import RetryPolicy
from dqrxfer.settings import Server, resolve_server
from dqrxfer.standing import Standing
from dqrxfer.timeouts import Timeouts

if TYPE_CHECKING:  # the HTTP stack is imported when a session is made, not before
    import requests

    from dqrxfer.session import SessionFactory

LOGGER_NAME = "dqr-xfer"
LOG_FORMAT = "%(levelname)s:%(name)s:%(message)s"


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more output (repeatable)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s",
        "--server",
        help="server URL (default: $DQRXFER_SERVER, then 'server' in the user config file, "
        "then the central server)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=Timeouts.connect,
        metavar="SECONDS",
        help="time allowed to connect, and for each send to progress (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=Timeouts.read,
        metavar="SECONDS",
        help="time allowed for the server to answer a request (default %(default)s)",
    )
    add_auth_options(parser)


def add_retry_options(parser: argparse.ArgumentParser) -> None:
    policy = RetryPolicy()
    parser.add_argument(
        "--retries",
        type=int,
        default=policy.retries,
        help="failed attempts in a row (without progress) before giving up (default %(default)s)",
    )
    parser.add_argument(
        "--retry-wait",
        type=float,
        default=policy.wait,
        metavar="SECONDS",
        help="wait before the first retry (none after a lost connection); doubles after "
        "each failure in a row, with jitter, up to 5 minutes (default %(default)s)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=policy.deadline,
        metavar="SECONDS",
        help="give up on a payload after this long, whatever happens (default %(default)s)",
    )


class _MovedToServer(argparse.Action):
    """An option of the old tool whose job moved to the server's commands:
    refused at once (before the check of required options) saying where."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            f"{option_string} (registering a report already on the central server's disk) "
            "moved to the server: an operator there runs 'dqrxfer-server reports register "
            "--graceid ... --site ... --revision ... --path DIR'"
        )


def add_legacy_options(parser: argparse.ArgumentParser) -> None:
    """Options of the old dqrxfer that are recognised to say where they went."""
    parser.add_argument("--set-dir", nargs="?", action=_MovedToServer, help=argparse.SUPPRESS)


# -- credentials: the one place where authentication plugs into the commands --


def add_auth_options(parser: argparse.ArgumentParser) -> None:
    """Options choosing credentials (Kerberos ticket or keytab) — see
    ``dqrxfer.auth``.  Every command that talks to the server calls this."""
    parser.add_argument(
        "--keytab",
        metavar="FILE",
        help="authenticate with this keytab (robots) instead of the Kerberos ticket cache "
        "(KRB5CCNAME); MIT Kerberos also reads a keytab named by KRB5_CLIENT_KTNAME",
    )
    parser.add_argument(
        "--service-principal",
        metavar="NAME",
        help="the server's Kerberos principal, e.g. HTTP/dqr.ligo.caltech.edu@LIGO.ORG, when "
        "it is not HTTP/<the server URL's host> (default: $DQRXFER_SERVICE_PRINCIPAL)",
    )


def auth_factory(args: argparse.Namespace) -> Callable[[], requests.auth.AuthBase | None] | None:
    """What authenticates each session the command makes (None: no auth).

    Called once per command, before any request; raising
    :class:`~dqrxfer.errors.AuthenticationError` here (an unusable keytab)
    ends the command with exit code 3 before any traffic.  A missing ticket
    is reported (klist-style) when the server asks for Kerberos, so a
    development server without authentication needs none.
    """
    from dqrxfer.auth import auth_factory as kerberos

    return kerberos(keytab=args.keytab, service=args.service_principal)


def make_session_factory(args: argparse.Namespace) -> SessionFactory:
    """The sessions of one command: timeouts from the options, credentials
    from :func:`auth_factory`."""
    from dqrxfer.session import session_factory

    timeouts = Timeouts(connect=args.connect_timeout, read=args.timeout)
    return session_factory(make_auth=auth_factory(args), timeouts=timeouts)


def retry_policy(args: argparse.Namespace) -> RetryPolicy:
    return RetryPolicy(
        retries=max(0, args.retries),
        wait=max(0.0, args.retry_wait),
        deadline=args.deadline if args.deadline and args.deadline > 0 else None,
    )


def server_url(args: argparse.Namespace) -> str:
    """The server URL, resolved and checked once per command (see
    :mod:`dqrxfer.settings`): a bad one is a usage error naming its source."""
    resolved: Server | None = getattr(args, "resolved_server", None)
    if resolved is None:
        resolved = resolve_server(args.server)
        args.resolved_server = resolved
        logging.getLogger(LOGGER_NAME).debug("server %s (from %s)", resolved.url, resolved.source)
    return resolved.url


# -- output ------------------------------------------------------------------


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


class _TqdmHandler(logging.StreamHandler[TextIO]):
    """Writes log lines above the progress bars instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - as logging.StreamHandler does
            self.handleError(record)


def setup_logging(args: argparse.Namespace) -> logging.Logger:
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    handler: logging.Handler = (
        _TqdmHandler() if stderr_is_terminal() else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if args.verbose < 2:
        logging.getLogger("urllib3").setLevel(logging.WARNING)
    return logging.getLogger(LOGGER_NAME)


def make_progress(args: argparse.Namespace, standing: Standing | None = None) -> Progress:
    """Bars on a terminal, occasional log lines otherwise, nothing with -q;
    each upload told to ``standing`` too (see :func:`run`)."""
    progress: Progress
    if args.quiet:
        progress = NullProgress()
    else:
        progress = TqdmProgress() if stderr_is_terminal() else LogProgress()
    return standing.tracking(progress) if standing is not None else progress


def check_ca_bundle() -> None:
    """A CA bundle named in the environment must exist: requests only finds
    out at the first HTTPS request, with a traceback."""
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        path = os.environ.get(variable)
        if path and not os.path.exists(path):
            raise UsageError(f"{variable}: {path} does not exist (a CA bundle file or directory)")


def run(
    action: Callable[[logging.Logger], int],
    log: logging.Logger,
    args: argparse.Namespace | None = None,
    standing: Standing | None = None,
) -> int:
    """Run ``action``, map errors to exit codes and close with the elapsed time.

    ``args`` (the parsed options) have their server URL checked first, so a
    bad one is a usage error before anything else happens.

    SIGINT (Ctrl-C) and SIGTERM (what HTCondor sends when it evicts a job)
    end the command at once, from the signal handler: the error line says
    how far the uploads got (``standing``, whose unfinished uploads the
    server is asked about for at most :data:`ASK_WITHIN` seconds) and that
    the same command resumes, and the exit code is 128 + the signal's number
    (130, 143), as a shell reports it.  Unwinding instead would wait for the threads still sending
    (parallel streams, ``--jobs``), which keep going until their payload is
    done.  Nothing is lost by exiting there: resume entries are written
    atomically before the step that needs them, and the server keeps every
    byte it acknowledged, as after a kill.
    """
    start = time.monotonic()

    def interrupted(signum: int, frame: object) -> None:
        for number in INTERRUPTING_SIGNALS:
            signal.signal(number, signal.SIG_IGN)  # a second one would interrupt this
        log.error("%s", interruption_message(signal.Signals(signum).name, standing))
        log.info("Elapsed time: %.1fs", time.monotonic() - start)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)

    previous = {number: signal.signal(number, interrupted) for number in INTERRUPTING_SIGNALS}
    try:
        check_ca_bundle()
        if args is not None and hasattr(args, "server"):
            server_url(args)
        code = action(log)
    except DqrxferError as error:
        log.error("%s", error)
        code = error.exit_code
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    log.info("Elapsed time: %.1fs", time.monotonic() - start)
    return code


#: Signals that interrupt a command (exit code 128 + the number: 130, 143).
INTERRUPTING_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: Seconds an interrupted command waits for the server to say how much of
#: its unfinished uploads it holds: short, so that an eviction (whose
#: SIGKILL follows) is hardly delayed.
ASK_WITHIN = 2.5


def interruption_message(name: str, standing: Standing | None) -> str:
    """What an interrupted command says: how far its uploads got (as the
    server says, asked now; else at least the bytes it acknowledged), and
    that the same command resumes them (the resume entries and the server
    keep every byte it verified)."""
    if standing is None:
        return f"interrupted by {name}"
    summary = standing.summary(standing.ask_server(ASK_WITHIN))
    if summary is None:
        return f"interrupted by {name} {STARTING}"
    return f"interrupted by {name}: {summary}; run the same command again to resume"
