"""Showing progress: a tqdm bar on a terminal, plain log lines otherwise.

HTCondor jobs write to files: there a bar would be noise, so each transfer
logs a line every :data:`LOG_EVERY` of its size (or every
:data:`LOG_INTERVAL` seconds, whichever comes later) in the usual
``LEVEL:dqr-xfer:message`` form.  The API reports nothing unless given a
:class:`Progress`.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from .units import format_rate, format_size

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger("dqr-xfer")

LOG_EVERY = 0.10
LOG_INTERVAL = 5.0


#: The one size format of the client's output (see :mod:`dqrxfer.units`).
human_bytes = format_size


class Task(Protocol):
    """One bar: bytes done out of ``total``. Safe to call from several threads."""

    def moveto(self, done: int) -> None: ...

    def confirmed(self, on_server: int) -> None:
        """The server has acknowledged ``on_server`` bytes (``moveto`` also
        counts bytes still in flight)."""

    def acknowledged(self, url: str, length: int, offset: int) -> None:
        """The server has acknowledged ``offset`` of the ``length`` bytes of
        the upload ``url``, one of the payload's (the whole payload, or a
        partial upload of it): :meth:`confirmed` counts them all."""

    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, label: str, total: int, done: int = 0, unit: str = "upload") -> Task: ...


class _NullTask:
    """A task that shows nothing; the others override what they show."""

    def moveto(self, done: int) -> None:
        pass

    def confirmed(self, on_server: int) -> None:
        pass

    def acknowledged(self, url: str, length: int, offset: int) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    def task(self, label: str, total: int, done: int = 0, unit: str = "upload") -> Task:
        return _NullTask()


class _LogTask(_NullTask):
    def __init__(self, label: str, total: int, done: int, verb: str) -> None:
        self.label = label
        self.total = total
        self.verb = verb
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.start_done = done
        self.last_logged = done
        self.last_time = self.started

    def moveto(self, done: int) -> None:
        with self.lock:
            now = time.monotonic()
            step = max(1, int(self.total * LOG_EVERY))
            if done - self.last_logged < step or now - self.last_time < LOG_INTERVAL:
                return
            self.last_logged, self.last_time = done, now
            rate = (done - self.start_done) / max(now - self.started, 1e-6)
            percent = 100.0 * done / self.total if self.total else 100.0
            log.info(
                "%s %s: %s of %s (%.0f%%), %s",
                self.verb,
                self.label,
                format_size(done),
                format_size(self.total),
                percent,
                format_rate(rate),
            )


class LogProgress:
    """Progress as occasional INFO lines (for logs and batch systems)."""

    def task(self, label: str, total: int, done: int = 0, unit: str = "upload") -> Task:
        verb = "Hashing" if unit == "hash" else "Sending"
        return _LogTask(label, total, done, verb)


class _TqdmTask:
    def __init__(self, bar: tqdm[Any]) -> None:
        self.bar = bar
        self.lock = threading.Lock()

    def moveto(self, done: int) -> None:
        with self.lock:
            delta = done - self.bar.n
            if delta:
                self.bar.update(delta)

    def confirmed(self, on_server: int) -> None:
        pass

    def acknowledged(self, url: str, length: int, offset: int) -> None:
        pass

    def close(self) -> None:
        with self.lock:
            self.bar.close()


class TqdmProgress:
    """One tqdm bar per transfer on the terminal (stderr)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.positions: dict[str, int] = {}

    def task(self, label: str, total: int, done: int = 0, unit: str = "upload") -> Task:
        tqdm = _bar_class()
        with self.lock:  # one line per payload: its hashing bar, then its upload bar
            position = self.positions.setdefault(label, len(self.positions))
        description = f"hashing {label}" if unit == "hash" else label
        bar = tqdm(
            total=total,
            initial=done,
            unit="B",
            desc=description,
            bar_format=BAR_FORMAT,
            position=position,
            leave=unit != "hash",
            dynamic_ncols=True,
            mininterval=0.2,
        )
        return _TqdmTask(bar)


#: The bar's text: sizes and rate in the client's units (tqdm's own scaling
#: writes "MB/s" for mebibytes).
BAR_FORMAT = "{l_bar}{bar}| {size_done} of {size_total} [{elapsed}<{remaining}, {speed}]"


@cache
def _bar_class() -> type:
    """tqdm, giving its bar format the sizes and the rate in our units."""
    from tqdm import tqdm

    class Bar(tqdm):  # type: ignore[type-arg]  # tqdm's type parameter is the iterable's
        @property
        def format_dict(self) -> dict[str, Any]:
            values = dict(super().format_dict)
            rate = values.get("rate")
            if rate is None:
                elapsed = values.get("elapsed") or 0.0
                rate = (values["n"] - values.get("initial", 0)) / elapsed if elapsed else 0.0
            total = values.get("total")
            values.update(
                size_done=format_size(values["n"]),
                size_total=format_size(total) if total is not None else "?",
                speed=format_rate(rate),
            )
            return values

    return Bar
