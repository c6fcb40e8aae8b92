"""How far a command's uploads got, for the line it logs when it is interrupted.

:class:`Standing` wraps the :class:`~dqrxfer.progress.Progress` a command
shows its transfers with and keeps, for each payload, its size and its
uploads (one, or a partial upload per stream) with the bytes the server has
acknowledged of each: when SIGTERM (an HTCondor eviction) or Ctrl-C ends the
command, it can say how much is on the server and that running the same
command again resumes from there.

Acknowledged bytes are a lower bound: a PATCH with block checksums carries
the rest of its range, and the server keeps each verified block of it
without answering until the end.  So the command asks the server for the
offset of each unfinished upload first (:meth:`Standing.ask_server`), and
counts the acknowledged bytes, saying "at least", for an upload it did not
answer for in time.  Each upload is asked on a session of its own, made by
the command's :data:`~dqrxfer.session.SessionFactory` (authenticated as its
other requests): the sessions of the threads still sending are busy.  The
threads asking are daemons and the bound is overall, so a server that does
not answer hardly delays an eviction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from .progress import Progress, Task
from .units import format_size

if TYPE_CHECKING:
    from .session import SessionFactory


@dataclass
class _Upload:
    length: int
    acknowledged: int = 0


@dataclass
class _Payload:
    total: int
    on_server: int = 0
    #: By URL: the payload's uploads in the current attempt.
    uploads: dict[str, _Upload] = field(default_factory=dict)

    def unfinished(self) -> list[str]:
        return [url for url, upload in self.uploads.items() if upload.acknowledged < upload.length]

    def standing(self, asked: Mapping[str, int]) -> tuple[int, bool]:
        """Its bytes on the server, and whether that count is exact (the
        server gave the offset of each unfinished upload in ``asked``)."""
        exact = True
        on_server = 0
        for url, upload in self.uploads.items():
            offset = upload.acknowledged
            if offset < upload.length:
                if url in asked:
                    offset = max(offset, asked[url])
                else:
                    exact = False
            on_server += min(offset, upload.length)
        return min(max(on_server, self.on_server), self.total), exact


class _TrackedTask:
    def __init__(self, inner: Task, record: _Payload | None, lock: threading.RLock) -> None:
        self.inner = inner
        self.record = record
        self.lock = lock

    def moveto(self, done: int) -> None:
        self.inner.moveto(done)

    def confirmed(self, on_server: int) -> None:
        if self.record is not None:
            with self.lock:
                self.record.on_server = max(self.record.on_server, on_server)
        self.inner.confirmed(on_server)

    def acknowledged(self, url: str, length: int, offset: int) -> None:
        if self.record is not None:
            with self.lock:
                upload = self.record.uploads.setdefault(url, _Upload(length))
                upload.acknowledged = max(upload.acknowledged, offset)
        self.inner.acknowledged(url, length, offset)

    def close(self) -> None:
        self.inner.close()


class Standing:
    """The payloads of one command: their sizes and the bytes on the server."""

    def __init__(self) -> None:
        # Reentrant: the signal handler reads it in the main thread, which
        # may hold it at that moment.
        self._lock = threading.RLock()
        self._payloads: dict[str, _Payload] = {}
        self._sessions: SessionFactory | None = None

    def expect(self, label: str, total: int) -> None:
        """A payload that will be sent (counted in the total before it starts)."""
        with self._lock:
            self._payloads.setdefault(label, _Payload(total))

    def tracking(self, inner: Progress) -> Progress:
        """``inner``, telling this standing about every upload it shows."""
        return _TrackedProgress(inner, self)

    def ask_with(self, sessions: SessionFactory) -> None:
        """Make the sessions :meth:`ask_server` asks on with ``sessions``
        (the command's own: the same server, timeouts and credentials)."""
        self._sessions = sessions

    def _record(self, label: str, total: int) -> _Payload:
        """A payload's record for a new attempt at it: its uploads are the
        ones this attempt tells (a payload started over has new ones)."""
        with self._lock:
            record = self._payloads[label] = _Payload(total)
            return record

    def ask_server(self, within: float) -> dict[str, int]:
        """The offsets of the unfinished uploads, asked now (HEAD, all at
        once), those the server gave within ``within`` seconds; none
        without sessions to ask on (see :meth:`ask_with`)."""
        with self._lock:
            urls = [url for payload in self._payloads.values() for url in payload.unfinished()]
            sessions = self._sessions
        if not urls or sessions is None:
            return {}
        return ask_offsets(urls, sessions, within)

    def summary(self, asked: Mapping[str, int] | None = None) -> str | None:
        """``27.0 MiB of 76.3 MiB on the server`` (with several payloads,
        how many are complete), or None when no payload is known yet.

        ``asked``: offsets of unfinished uploads the server gave just now
        (see :meth:`ask_server`); an unfinished upload missing from them
        counts the bytes the server acknowledged, and the line begins with
        ``at least``."""
        with self._lock:
            standings = [payload.standing(asked or {}) for payload in self._payloads.values()]
            totals = [payload.total for payload in self._payloads.values()]
        if not standings:
            return None
        on_server = sum(count for count, _ in standings)
        exact = all(known for _, known in standings)
        text = f"{format_size(on_server)} of {format_size(sum(totals))} on the server"
        if not exact:
            text = "at least " + text
        if len(standings) > 1:
            complete = sum(
                count >= total for (count, _), total in zip(standings, totals, strict=True)
            )
            text += f" ({complete} of {len(standings)} uploads complete)"
        return text


class _TrackedProgress:
    def __init__(self, inner: Progress, standing: Standing) -> None:
        self.inner = inner
        self.standing = standing

    def task(self, label: str, total: int, done: int = 0, unit: str = "upload") -> Task:
        inner = self.inner.task(label, total, done, unit)
        record = self.standing._record(label, total) if unit == "upload" else None
        return _TrackedTask(inner, record, self.standing._lock)


def ask_offsets(urls: Sequence[str], sessions: SessionFactory, within: float) -> dict[str, int]:
    """The offset of each upload of ``urls`` the server gave within
    ``within`` seconds (HEAD); an upload missing from the answer was not
    answered in time, or not answered with an offset."""
    # Imported here, not on the threads: the main thread, interrupted, may
    # be amid an import.  The HTTP stack is loaded once sessions exist.
    from .transport import TusClient

    answers: dict[str, int] = {}
    lock = threading.Lock()

    def ask(url: str) -> None:
        try:
            session = sessions()
            try:
                # The upload URLs are <server>/files/<id>: their endpoint is the folder.
                offset = TusClient(session, urljoin(url, "./")).status(url).offset
            finally:
                session.close()
        except Exception:  # an error is no answer: the line says "at least"
            return
        if offset is not None:
            with lock:
                answers[url] = offset

    threads = [
        threading.Thread(target=ask, args=(url,), name="dqr-ask", daemon=True) for url in urls
    ]
    deadline = time.monotonic() + within
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        return dict(answers)
