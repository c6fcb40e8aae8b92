"""The final upload of a payload sent as partial uploads, created while they
travel (with the server's ``concatenation-unfinished``).

The report contract puts the payload's sha256 in the final upload's metadata,
so it can only be asked for once the hashing thread is done; the partial
uploads are sent meanwhile.  :class:`FinalCreation` asks for it on a thread
and a session of its own as soon as the sha256 is known, so its round trip
hides behind the bytes on the link.  The payload's last bytes
(:data:`~dqrxfer.partials.TAIL`) wait for it (:class:`~dqrxfer.transport.GatedBody`):
the partial upload completes only after the final upload exists, so the
server joins and publishes in the PATCH that carries the last byte, whose
lost answer costs a HEAD, never a second final upload.  In the usual case
the final upload exists long before the last bytes are due, and the payload
goes in one PATCH.
"""

from __future__ import annotations

import logging
import threading

from . import faults
from .job import Job
from .payload import BackgroundScan
from .resume import ResumeEntry
from .retry import Retrier

log = logging.getLogger("dqr-xfer")


class FinalCreation:
    """Creates the final upload of ``urls`` for ``entry`` (its sha256 from
    ``background`` unless the entry has it), remembering the sha256 and then
    the final upload's URL in the resume store as soon as each is known."""

    def __init__(
        self, job: Job, entry: ResumeEntry, urls: list[str], background: BackgroundScan | None
    ) -> None:
        self.job = job
        self.entry = entry
        self.urls = urls
        self.background = background
        self.done = threading.Event()
        self.cancel = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="dqr-final", daemon=True)

    def start(self) -> FinalCreation:
        self.thread.start()
        return self

    def _run(self) -> None:
        job, entry = self.job, self.entry
        session = job.session_factory()
        try:
            if self.background is not None:
                entry.sha256 = self.background.result().sha256
            job.resume.remember(entry)
            faults.point("before-final")
            tus = job.tus.on_same_link(session)
            retrier = Retrier(job.options.retry, job.payload.filename, self.cancel)
            metadata = job.planned.metadata(entry.sha256)
            concat = "final;" + " ".join(self.urls)
            final = retrier.call(lambda: tus.create(None, metadata, concat))
            entry.url = final.url
            job.resume.remember(entry)
            log.debug("%s: final upload %s", job.payload.filename, final.url)
            faults.point("after-final")
        except BaseException as error:  # handed to wait()
            self.error = error
        finally:
            session.close()
            self.done.set()

    def wait(self) -> None:
        """Until the final upload exists; raises what stopped its creation."""
        self.done.wait()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """The sending ended (or failed): stop retrying and wait for the thread."""
        self.cancel.set()
        self.thread.join()
