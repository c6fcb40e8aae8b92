"""``dqr-ping``: log in to the server, ping it, and compare the clocks.

Output in the style of the existing tool: ``OK`` on standard output for each
successful ping, and on standard error::

    INFO:dqr-xfer:Logged in to https://dqr.ligo.caltech.edu as albert.einstein@LIGO.ORG
    INFO:dqr-xfer:Login: 1.33, Ping: 0.30, status:200
    ...
    INFO:dqr-xfer:Clock offset: +0.012 s (the server's clock minus this host's)
    INFO:dqr-xfer:Success = 100.0%
    INFO:dqr-xfer:Elapsed time: 2.7s

Exit code 0 only if every ping succeeded; otherwise 3 (authentication), 4
(refused) or 5 (the server could not be reached or failed).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from dqrxfer.errors import UsageError, worst_exit_code
from dqrxfer.ping import KERBEROS_SKEW, PingReport, ping

from .common import (
    add_common_options,
    add_server_options,
    make_session_factory,
    run,
    server_url,
    setup_logging,
)

#: Offsets beyond this many seconds get a warning before Kerberos starts failing.
SKEW_CAUTION = 60.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dqr-ping",
        description="Log in to the DQR server, ping it and check this host's clock against it.",
        epilog="exit codes: 0 every ping succeeded; 2 usage (bad options, a server URL "
        "that is not a dqrxfer server's); 3 authentication; 4 refused; "
        "5 the server could not be reached or failed; 130 interrupted (Ctrl-C); "
        "143 terminated (SIGTERM).",
    )
    parser.add_argument(
        "-n",
        "--count",
        type=int,
        default=3,
        help="number of pings after logging in (default %(default)s)",
    )
    add_server_options(parser)
    add_common_options(parser)
    return parser


def report_clock(report: PingReport, log: logging.Logger) -> None:
    offset = report.clock_offset
    if offset is None:
        return
    log.info("Clock offset: %+.3f s (the server's clock minus this host's)", offset)
    where = "behind" if offset > 0 else "ahead of"
    if abs(offset) > KERBEROS_SKEW:
        banner = "*" * 72
        log.warning(banner)
        log.warning(
            "THIS HOST'S CLOCK IS %.0f s %s THE SERVER'S: Kerberos refuses tickets beyond "
            "%.0f s of skew, so authentication will fail.",
            abs(offset),
            where.upper(),
            KERBEROS_SKEW,
        )
        log.warning("Fix the clock (NTP: chronyd or ntpd) and try again.")
        log.warning(banner)
    elif abs(offset) > SKEW_CAUTION:
        log.warning(
            "this host's clock is %.0f s %s the server's; Kerberos fails beyond %.0f s: check NTP",
            abs(offset),
            where,
            KERBEROS_SKEW,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = setup_logging(args)

    def action(log: logging.Logger) -> int:
        if args.count < 1:
            raise UsageError("-n/--count: must be at least 1")
        server = server_url(args)
        session = make_session_factory(args)()
        try:
            report = ping(session, server, args.count)
        finally:
            session.close()
        log.info(
            "Logged in to %s as %s",
            server,
            report.principal or "nobody (the server asks for no authentication)",
        )
        log.debug("server version %s", report.version)
        for item in report.pings:
            if item.ok:
                print("OK", flush=True)
                log.info(
                    "Login: %.2f, Ping: %.2f, status:%d",
                    report.login_seconds,
                    item.seconds,
                    item.status,
                )
            else:
                log.error(
                    "Login: %.2f, Ping: %.2f, status:%s: %s",
                    report.login_seconds,
                    item.seconds,
                    item.status if item.status is not None else "none",
                    item.error,
                )
        report_clock(report, log)
        log.info("Success = %.1f%%", report.success_rate)
        return worst_exit_code(
            item.error.exit_code for item in report.pings if item.error is not None
        )

    return run(action, log, args)


if __name__ == "__main__":
    sys.exit(main())
