"""``dqr-upload``: push a report file (or several) to the central server."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dqrxfer.settings import resolve_server
from dqrxfer.upload import DEFAULT_CHUNK_SIZE, ReportTarget, upload_file

from .common import add_common_options, run, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dqr-upload",
        description="Upload Data Quality Report files to the central server (resumable, verified).",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="report file(s) to upload")
    parser.add_argument("-p", "--project", required=True, help="project: replay, MDC, O4, personal")
    parser.add_argument("-g", "--graceid", required=True, help="GraceDB id, e.g. S230518h")
    parser.add_argument("-u", "--uploader", required=True, help="site: llo, lho, virgo, kagra")
    parser.add_argument("--revision", required=True, help="report revision (non-negative integer)")
    parser.add_argument("--subdir", default="", help="sub-directory inside the report")
    parser.add_argument(
        "-s", "--server", help="server URL (default: $DQRXFER_SERVER, user config, central server)"
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE // (1024 * 1024),
        metavar="MiB",
        help="size of each PATCH request in MiB (default %(default)s)",
    )
    add_common_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = setup_logging(args)

    def action(log: logging.Logger) -> int:
        server = resolve_server(args.server)
        target = ReportTarget(args.project, args.graceid, args.uploader, args.revision, args.subdir)
        for path in args.paths:
            result = upload_file(
                server, Path(path), target, chunk_size=args.chunk_size * 1024 * 1024
            )
            log.info("Uploaded %s (%d bytes, sha256 %s)", result.path, result.size, result.sha256)
            print(result.report_url)
        return 0

    return run(action, log)


if __name__ == "__main__":
    sys.exit(main())
