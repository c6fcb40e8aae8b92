"""The payload's hash: passes adopted from before the upload, or made for it.

The report contract puts the payload's sha256 in the metadata of the upload
that is published.  ``dqr-upload`` starts hashing its first payload before it
imports the HTTP stack (see :meth:`dqrxfer.upload.ReportUploader.adopt_scan`);
:class:`EarlyScans` keeps such passes until their payload is sent, and makes
the pass a payload needs when there is none to adopt.
"""

from __future__ import annotations

from .payload import BackgroundScan, Payload, Scan, scan
from .progress import Progress


class EarlyScans:
    """Passes over payloads, already running, by payload (for uploads with
    chunks of ``chunk_size`` bytes)."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self._passes: dict[int, BackgroundScan] = {}

    def adopt(self, background: BackgroundScan) -> None:
        self._passes[id(background.payload)] = background

    def take(self, payload: Payload, algorithm: str | None) -> BackgroundScan | None:
        """The adopted pass over ``payload`` if it fits this upload's chunk grid
        and ``algorithm`` (a pass computing chunk digests fits no algorithm:
        they are dropped), else None (and the pass is stopped)."""
        background = self._passes.pop(id(payload), None)
        if background is None:
            return None
        fits = background.scan.chunk_size == self.chunk_size and (
            algorithm is None or background.scan.algorithm == algorithm
        )
        if not fits:
            background.stop()
            return None
        background.scan.algorithm = algorithm
        return background

    def sha256(self, payload: Payload, algorithm: str | None) -> str:
        """The payload's sha256 before it is sent (to compare it with the
        server's copy): the adopted pass's, waited for, else a new pass's
        (with chunk digests by ``algorithm``).  The pass stays adopted, so
        the upload that may follow hashes nothing again."""
        background = self._passes.get(id(payload))
        if background is None:
            background = BackgroundScan(payload, self.chunk_size, algorithm).start()
            self._passes[id(payload)] = background
        return background.result().sha256

    def drop(self, payload: Payload) -> None:
        background = self._passes.pop(id(payload), None)
        if background is not None:
            background.stop()

    def running(self, payload: Payload, algorithm: str | None) -> BackgroundScan:
        """A pass over ``payload`` that runs while it is sent: the adopted one
        if it fits, else a new one."""
        return (
            self.take(payload, algorithm)
            or BackgroundScan(payload, self.chunk_size, algorithm).start()
        )

    def finished(self, payload: Payload, algorithm: str | None, progress: Progress) -> Scan:
        """The whole pass over ``payload``, before it is sent (shown by
        ``progress``): the adopted one waited for, else one made here."""
        task = progress.task(payload.filename, payload.size, unit="hash")
        done = 0

        def on_block(count: int) -> None:
            nonlocal done
            done += count
            task.moveto(done)

        try:
            background = self.take(payload, algorithm)
            if background is None:
                return scan(payload, self.chunk_size, algorithm, on_block)
            while not background.wait(0.2):
                task.moveto(background.hashed)
            return background.result()
        finally:
            task.close()
