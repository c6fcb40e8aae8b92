"""What every dqrxfer command shares: -v/-q/-V, the LVK logging style, and the
mapping of errors to exit codes (done here, at the edge, and nowhere else)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable

from dqrxfer import __version__
from dqrxfer.errors import DqrxferError

LOGGER_NAME = "dqr-xfer"


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more output (repeatable)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")


def setup_logging(args: argparse.Namespace) -> logging.Logger:
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s:%(name)s:%(message)s")
    if args.verbose < 2:
        logging.getLogger("urllib3").setLevel(logging.WARNING)
    return logging.getLogger(LOGGER_NAME)


def run(action: Callable[[logging.Logger], int], log: logging.Logger) -> int:
    """Run ``action``, map errors to exit codes and close with the elapsed time."""
    start = time.monotonic()
    try:
        code = action(log)
    except DqrxferError as error:
        log.error("%s", error)
        code = error.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        code = 130
    log.info("Elapsed time: %.1fs", time.monotonic() - start)
    return code


def exit_with(code: int) -> None:
    sys.exit(code)
