"""``dqr-batch-upload``: send every report of a tree that the server does not have yet."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dqrxfer.batch import BatchUploader, find_reports, summary_table
from dqrxfer.errors import UsageError, worst_exit_code
from dqrxfer.standing import Standing

from .common import (
    add_common_options,
    add_retry_options,
    add_server_options,
    make_progress,
    make_session_factory,
    run,
    server_url,
    setup_logging,
)
from .upload import add_transfer_options, options_from

EPILOG = """\
Report directories are found by name: <graceid>_dir/<graceid>_<site>_<revision>/
(a ROOT may also be one of them).  Each report the server does not list yet
(links API) is packed and sent as one tar archive; the summary table goes to
standard output.

exit codes: 0 every report is on the server; 2 usage; 3 authentication;
4 a report was refused (read its message); 5 gave up after retries (run again:
finished reports are skipped, interrupted ones resume); 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM): run again likewise.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dqr-batch-upload",
        description="Upload every report directory of a tree that is not on the server yet.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "roots", nargs="+", metavar="ROOT", help="directory holding <graceid>_dir trees"
    )
    parser.add_argument("-p", "--project", required=True, help="project: replay, MDC, O4, personal")
    parser.add_argument(
        "--update",
        action="store_true",
        help="also send, of the reports the server has, the files that it lacks or has "
        "with another size or sha256 (files only on the server stay)",
    )
    add_server_options(parser)
    add_retry_options(parser)
    add_transfer_options(parser)
    add_common_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = setup_logging(args)
    standing = Standing()

    def action(log: logging.Logger) -> int:
        args.as_file = False
        options = options_from(args)
        reports = find_reports([Path(root) for root in args.roots])
        if not reports:
            raise UsageError(
                f"no report directories (<graceid>_dir/<graceid>_<site>_<revision>) under "
                f"{', '.join(args.roots)}"
            )
        sessions = make_session_factory(args)
        standing.ask_with(sessions)
        batch = BatchUploader(
            server_url(args),
            args.project,
            options,
            sessions,
            progress=make_progress(args, standing),
            update=args.update,
        )
        items = batch.run(reports, jobs=args.jobs, dry_run=args.dry_run)
        print(summary_table(items), flush=True)
        return worst_exit_code(item.exit_code for item in items)

    return run(action, log, args, standing)


if __name__ == "__main__":
    sys.exit(main())
