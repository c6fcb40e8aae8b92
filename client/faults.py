"""Fault points for crash tests.  TEST-ONLY: never set this in production.

With ``DQRXFER_TEST_FAULT=<point>:<marker file>`` in its environment, a client
or server process that reaches ``<point>`` writes its pid to the marker file
and then stops dead, waiting to be killed (``kill -9``), so a test can kill it
at an exact place and check what a re-run or a restart makes of it.

Client points (an upload, on the thread that creates the final upload while
the partial uploads travel): ``before-final`` (sha256 known and kept, final
upload not asked for) and ``after-final`` (final upload created and its URL
kept); either way the partial uploads' last bytes, which wait for the final
upload, are never sent.
Server points (finalization, ``dqrxfer.server.reports``): ``after-extract``
(archive staged and checked, report unchanged) and ``after-publish`` (report
tree changed, database not yet).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

ENVIRONMENT_VARIABLE = "DQRXFER_TEST_FAULT"


def point(name: str) -> None:
    spec = os.environ.get(ENVIRONMENT_VARIABLE)
    if not spec:
        return
    wanted, _, marker = spec.partition(":")
    if wanted != name or not marker:
        return
    Path(marker).write_text(str(os.getpid()))
    threading.Event().wait()
