"""How far a command's uploads got, for the line it logs when it is interrupted.

:class:`Standing` wraps the :class:`~dqrxfer.progress.Progress` a command
shows its transfers with and keeps, for each payload, its size and the bytes
the server has acknowledged: when SIGTERM (an HTCondor eviction) or Ctrl-C
ends the command, it can say how much is on the server and that running the
same command again resumes from there.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .progress import Progress, Task
from .units import format_size


@dataclass
class _Payload:
    total: int
    on_server: int = 0


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

    def close(self) -> None:
        self.inner.close()


class Standing:
    """The payloads of one command: their sizes and the bytes on the server."""

    def __init__(self) -> None:
        # Reentrant: the signal handler reads it in the main thread, which
        # may hold it at that moment.
        self._lock = threading.RLock()
        self._payloads: dict[str, _Payload] = {}

    def expect(self, label: str, total: int) -> None:
        """A payload that will be sent (counted in the total before it starts)."""
        with self._lock:
            self._payloads.setdefault(label, _Payload(total))

    def tracking(self, inner: Progress) -> Progress:
        """``inner``, telling this standing about every upload it shows."""
        return _TrackedProgress(inner, self)

    def _record(self, label: str, total: int) -> _Payload:
        with self._lock:
            record = self._payloads.get(label)
            if record is None or record.total != total:
                record = self._payloads[label] = _Payload(total)
            return record

    def summary(self) -> str | None:
        """``27.0 MiB of 76.3 MiB on the server`` (with several payloads,
        how many are complete), or None when no payload is known yet."""
        with self._lock:
            payloads = list(self._payloads.values())
        if not payloads:
            return None
        on_server = sum(min(p.on_server, p.total) for p in payloads)
        total = sum(p.total for p in payloads)
        text = f"{format_size(on_server)} of {format_size(total)} on the server"
        if len(payloads) > 1:
            complete = sum(p.on_server >= p.total for p in payloads)
            text += f" ({complete} of {len(payloads)} uploads complete)"
        return text


class _TrackedProgress:
    def __init__(self, inner: Progress, standing: Standing) -> None:
        self.inner = inner
        self.standing = standing

    def task(self, label: str, total: int, done: int = 0, unit: str = "upload") -> Task:
        inner = self.inner.task(label, total, done, unit)
        record = self.standing._record(label, total) if unit == "upload" else None
        return _TrackedTask(inner, record, self.standing._lock)
