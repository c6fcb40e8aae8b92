"""``dqr-upload``: push report files, tarballs or directories to the central server."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dqrxfer.errors import UsageError, worst_exit_code
from dqrxfer.payload import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_PIECE,
    BackgroundScan,
    MiB,
    payload_for,
    scan,
)
from dqrxfer.standing import Standing
from dqrxfer.units import format_size

from .common import (
    add_common_options,
    add_legacy_options,
    add_retry_options,
    add_server_options,
    make_progress,
    make_session_factory,
    retry_policy,
    run,
    server_url,
    setup_logging,
)

if TYPE_CHECKING:
    from dqrxfer.planning import PlannedUpload
    from dqrxfer.upload import ReportUploader, UploadOptions

# dqrxfer.upload (and with it requests and urllib3, a fifth of a second of
# start-up) is imported once the first payload is being hashed: see
# hash_early().

EPILOG = """\
A file is sent as it is; a tar archive (plain, gzip, bzip2, xz: recognised by
its content) is unpacked into the report by the server; a directory is packed
into a tar on the fly and unpacked likewise.  An interrupted upload continues
where it stopped when the same command is run again.

exit codes: 0 done; 2 usage (bad options or input); 3 authentication (no
ticket, expired, refused); 4 refused by the server (validation, authorization,
checksum: read the message); 5 gave up after retries (worth a retry later,
e.g. a condor retry); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM):
the same command resumes.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dqr-upload",
        description="Upload Data Quality Report files, tarballs or directories to the "
        "central server (resumable, verified).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="report file, tarball or directory to upload"
    )
    parser.add_argument("-p", "--project", required=True, help="project: replay, MDC, O4, personal")
    parser.add_argument("-g", "--graceid", required=True, help="GraceDB id, e.g. S230518h")
    parser.add_argument("-u", "--uploader", required=True, help="site: llo, lho, virgo, kagra")
    parser.add_argument("--revision", required=True, help="report revision (non-negative integer)")
    parser.add_argument("--subdir", default="", help="sub-directory inside the report")
    add_server_options(parser)
    add_retry_options(parser)
    add_transfer_options(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="send every file, also those the server has already at the same path with the "
        "same sha256 (default: such files are skipped)",
    )
    parser.add_argument(
        "--as-file",
        action="store_true",
        help="send tar archives as plain files instead of unpacking them on the server",
    )
    add_common_options(parser)
    add_legacy_options(parser)
    return parser


def add_transfer_options(parser: argparse.ArgumentParser) -> None:
    """How payloads are sent (shared with dqr-batch-upload)."""
    parser.add_argument(
        "--chunk-size",
        type=int,
        metavar="MiB",
        help=f"size of each PATCH request in MiB (default: {DEFAULT_CHUNK_SIZE // MiB}, growing "
        f"to {DEFAULT_MAX_PIECE // MiB} while the link holds)",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="upload N payloads at once (default %(default)s)",
    )
    parser.add_argument(
        "--parallel",
        type=parallel_count,
        default=None,
        metavar="N",
        help="send each payload as N partial uploads at once, joined on the server "
        "(needs the server's concatenation extension; helps on a long link that caps each "
        "connection); default auto: a payload of 64 MiB or more goes in 1, 2 or 4 streams, "
        "as earlier uploads to the server over a long link measured what pays",
    )
    parser.add_argument(
        "--no-checksum",
        dest="checksums",
        action="store_false",
        help="do not send per-chunk checksums even if the server offers them "
        "(the whole-payload sha256 is always checked)",
    )
    parser.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="neither continue an earlier, interrupted upload nor remember this one",
    )
    parser.add_argument(
        "--follow-external-links",
        action="store_true",
        help="send the files that symbolic links leading out of their directory point to "
        "(default: such links inside a directory are skipped with a warning, and a path named "
        "on the command line that is one is refused)",
    )
    parser.add_argument(
        "-n",
        "--dry-run",
        action="store_true",
        help="check the options and the paths, ask the server whether it takes the project "
        "and site and what it has of the report already, hash the payloads and say what "
        "would be sent where; send nothing",
    )


def parallel_count(text: str) -> int | None:
    """``--parallel``: a count of at least 1, or ``auto`` (None)."""
    if text.strip().lower() == "auto":
        return None
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError("must be 'auto' or a whole number of at least 1")
    return count


def chunk_size(args: argparse.Namespace) -> int:
    """The chunk grid in bytes (``--chunk-size``, else the default)."""
    return DEFAULT_CHUNK_SIZE if args.chunk_size is None else args.chunk_size * MiB


def options_from(args: argparse.Namespace) -> UploadOptions:
    from dqrxfer.upload import UploadOptions

    if args.chunk_size is not None and args.chunk_size < 1:
        raise UsageError("--chunk-size: must be at least 1 (MiB)")
    if args.jobs < 1:
        raise UsageError("--jobs: must be at least 1")
    return UploadOptions(
        chunk_size=chunk_size(args),
        # Pinned by --chunk-size; else growing on a good link.
        max_piece=None if args.chunk_size is not None else DEFAULT_MAX_PIECE,
        parallel=args.parallel,
        retry=retry_policy(args),
        checksums=args.checksums,
        resume=args.resume,
        as_file=args.as_file,
        follow_external_links=args.follow_external_links,
    )


def dry_run(
    uploader: ReportUploader, paths: list[Path], log: logging.Logger, force: bool = False
) -> int:
    planned = [uploader.plan(path) for path in paths]  # all checked before any hashing
    # The server's projects and sites, and what it has of the report already.
    settlement = uploader.settle(planned, dry_run=True, force=force)
    for item in settlement.todo:
        payload, report = item.payload, item.report
        digest = scan(payload, uploader.options.chunk_size).sha256
        where = f"{report.project}/{report.report_relpath}/{report.subdir}".rstrip("/")
        log.info(
            "Would upload %s as kind=%s filename=%s (%s, sha256 %s) to %s: %s/",
            payload.source,
            payload.kind,
            payload.filename,
            format_size(payload.size),
            digest,
            uploader.server,
            where,
        )
    return 0


def hash_early(args: argparse.Namespace, path: Path, start: bool = True) -> BackgroundScan | None:
    """The pass hashing the first payload on a thread of its own, started now
    unless not ``start``.

    Every upload needs the payload's sha256 (the report contract puts it in
    the metadata); started here, before the HTTP stack is imported and the
    first request is made, the hash runs on the second core while the first
    is busy with that start-up.  The chunk checksums are computed as CRC-32,
    which a server offering checksums is expected to take (the uploader
    drops them otherwise).  None when the options or the path are bad: they
    are refused in the usual order later.
    """
    if chunk_size(args) < 1 or args.jobs < 1:
        return None
    try:
        payload = payload_for(
            path, as_file=args.as_file, follow_external_links=args.follow_external_links
        )
    except UsageError:
        return None
    algorithm = "crc32" if args.checksums else None
    background = BackgroundScan(payload, chunk_size(args), algorithm)
    return background.start() if start else background


def spare_core() -> bool:
    """Whether this process may run on more than one CPU (an HTCondor job
    asking for one CPU, say, is often pinned to one).  On a single CPU a
    hash started before the first request only delays it: the start-up and
    the hash take turns, and the first bytes leave about 0.2 s later."""
    try:
        return len(os.sched_getaffinity(0)) > 1
    except AttributeError:  # not Linux
        return (os.cpu_count() or 1) > 1


@contextlib.contextmanager
def collections_after_start_up() -> Iterator[None]:
    """No garbage collection while the modules load (their objects live as
    long as the process: collecting among them is wasted work, some 30 ms of
    start-up); afterwards they are set aside from later collections."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = setup_logging(args)
    standing = Standing()

    def action(log: logging.Logger) -> int:
        paths = [Path(path) for path in args.paths]
        hash_now = spare_core()
        early = None if args.dry_run else hash_early(args, paths[0], start=hash_now)
        with collections_after_start_up():
            from dqrxfer.upload import ReportTarget, ReportUploader

            target = ReportTarget(
                args.project, args.graceid, args.uploader, args.revision, args.subdir
            )
            options = options_from(args)
            if args.dry_run:
                uploader = ReportUploader(
                    server_url(args), target, options, make_session_factory(args)
                )
                return dry_run(uploader, paths, log, args.force)
            sessions = make_session_factory(args)
            standing.ask_with(sessions)
            uploader = ReportUploader(
                server_url(args),
                target,
                options,
                session_factory=sessions,
                progress=make_progress(args, standing),
            )
        if early is not None:
            if not hash_now:
                early.start()  # the start-up is over: now it overlaps only the transfer
            uploader.adopt_scan(early)
        # Refuse bad input before sending.
        planned = [
            uploader.plan(path, early.payload if early is not None and index == 0 else None)
            for index, path in enumerate(paths)
        ]

        def expect(todo: list[PlannedUpload]) -> None:
            for item in todo:
                standing.expect(item.label, item.payload.size)

        settlement, outcomes = uploader.settle_and_upload(
            planned, jobs=args.jobs, force=args.force, on_todo=expect
        )
        urls = {o.path: o.result.report_url for o in outcomes if o.result is not None}
        urls.update(dict.fromkeys(settlement.skipped, settlement.report_url))
        for item in planned:  # one line per path uploaded or already there, in the given order
            url = urls.get(item.payload.source)
            if url:
                print(url, flush=True)
        failed = [o for o in outcomes if o.error is not None]
        if failed and len(outcomes) > 1:
            log.error("%d of %d uploads failed", len(failed), len(outcomes))
        return worst_exit_code(outcome.exit_code for outcome in outcomes)

    return run(action, log, args, standing)


if __name__ == "__main__":
    sys.exit(main())
