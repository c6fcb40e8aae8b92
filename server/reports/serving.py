"""Which file a ``/reports/<project>/<path>`` request may be answered with.

A report's files are served only from inside that report: the request's
path, resolved on disk with every link followed (``os.path.realpath``), must
end in a regular file under the real directory of the report it names
(``<graceid>_dir/<report>/...``), itself a real directory at that place.  A
link of one report therefore reaches neither outside the reports root nor
into another report (whose content another uploader controls), and devices,
FIFOs and sockets are never opened.  Paths less than three levels deep
(nothing a report holds) are confined to the project's reports root.

The publication code keeps every report inside itself (:mod:`.invariants`);
this is the same rule on the way out, for trees changed by hand or
published before the rule existed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: ``<graceid>_dir/<report>``: the levels above a report's own files.
REPORT_DEPTH = 2


def servable_file(reports_root: Path, relpath: str) -> Path | None:
    """The real path of the file ``relpath`` names under ``reports_root``, or
    None when it must not be served (hidden, outside its report, not a regular file)."""
    parts = relpath.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") or "\x00" in part for part in parts):
        return None
    root = Path(os.path.realpath(reports_root))
    container = root.joinpath(*parts[:REPORT_DEPTH]) if len(parts) > REPORT_DEPTH else root
    if os.path.realpath(container) != str(container):
        return None  # the event or report directory itself is a link
    real = Path(os.path.realpath(root.joinpath(*parts)))
    if not real.is_relative_to(container) or real == container:
        return None
    try:
        mode = real.stat().st_mode
    except OSError:
        return None
    if not stat.S_ISREG(mode):
        return None
    return real
