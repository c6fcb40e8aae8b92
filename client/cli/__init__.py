"""The command-line programs, each a thin layer over the client library.

- :mod:`~dqrxfer.cli.upload`: ``dqr-upload``, report files, tarballs or
  directories into one report (over :mod:`dqrxfer.upload`);
- :mod:`~dqrxfer.cli.batch`: ``dqr-batch-upload``, every report of a tree the
  server does not have yet (over :mod:`dqrxfer.batch`);
- :mod:`~dqrxfer.cli.ping`: ``dqr-ping``, log in, ping and compare the clocks
  (over :mod:`dqrxfer.ping`);
- :mod:`~dqrxfer.cli.common`: what they share (options, logging, the session,
  exit codes).
"""

from __future__ import annotations

import os
import signal
import sys

#: The commands' names (as their scripts are called).
COMMANDS = ("dqr-upload", "dqr-ping", "dqr-batch-upload")
#: What an interrupted command says when nothing was under way yet.
STARTING = "before any upload started; run the same command again"


def _interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM while the command loads its modules and reads its
    options: one line, and the exit code a shell gives (130, 143), instead of
    a traceback from whatever import was under way.  Nothing was sent yet.
    (Once running, :func:`dqrxfer.cli.common.run` handles the signals.)"""
    name = signal.Signals(signum).name
    os.write(2, f"ERROR:dqr-xfer:interrupted by {name} {STARTING}\n".encode())
    os._exit(128 + signum)


def handle_signals_while_starting() -> None:
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, _interrupted_while_starting)


# First of the commands' own modules to load: in a command's process (not in
# a program that imports the package), the rest of the start-up is covered.
if os.path.basename(sys.argv[0] if sys.argv else "") in COMMANDS:
    handle_signals_while_starting()
