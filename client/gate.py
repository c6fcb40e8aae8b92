"""An upload started before the comparison with the server's copy of the report.

``dqr-upload`` asks the links API whether the server has the report's files
already (:mod:`~dqrxfer.reupload`); waiting for that answer before creating
the upload costs a round trip before the first byte (0.3 s to KAGRA or EGO).
So the first payload's upload is created (or its resume entry checked) at the
same time, and waits at a :class:`Gate` before it sends any byte.  The
comparison opens the gate when the answer cannot change the payload: the
server has no file of the payload's paths with the same size (a file of
another size differs whatever its hash), so nothing can be skipped or left
out.  Otherwise it closes the gate: the upload made in advance is terminated
(DELETE) and forgotten, and the payload is compared file by file and sent (or
skipped) as before.
"""

from __future__ import annotations

import threading


class Superseded(Exception):
    """An upload made in advance was not wanted after all (its gate closed)."""


class Gate:
    """Opened or closed once; :meth:`wait` blocks until then."""

    def __init__(self) -> None:
        self._decided = threading.Event()
        self._open = False
        #: Set once closed: stops the retry waits of the upload made in advance.
        self.closed = threading.Event()

    def open(self) -> None:
        self._open = True
        self._decided.set()

    def close(self) -> None:
        if not self._decided.is_set():
            self.closed.set()
        self._decided.set()

    @property
    def decided(self) -> bool:
        return self._decided.is_set()

    @property
    def opened(self) -> bool:
        return self._decided.is_set() and self._open

    def wait(self) -> bool:
        """True once opened, False once closed."""
        self._decided.wait()
        return self._open
