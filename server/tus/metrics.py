"""Prometheus metrics of the tus endpoint, and the ``/metrics`` view.

Several gunicorn workers each count in their own process; ``dqrxfer-server
serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory before the
workers start, the workers write their values there (prometheus_client's
multiprocess mode) and ``/metrics``, answered by any worker, adds them up.
Without that variable (one process, e.g. a test app) the values live in the
process.

The metrics are created on first use, in the worker: prometheus_client picks
its storage (in memory or the multiprocess files) when the first metric is
made, so they must not exist before ``serve`` has set the variable.
"""

from __future__ import annotations

import glob
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Response

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LOCK_WAIT_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
KNOWN_METHODS = frozenset({"OPTIONS", "HEAD", "POST", "PATCH", "DELETE", "GET"})


class TusMetrics:
    """The metric objects (one set per process)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram, values

        # Re-read the environment: the module may have been imported (and its
        # storage chosen) before serve set PROMETHEUS_MULTIPROC_DIR.
        values.ValueClass = values.get_value_class()
        self.requests = Counter(
            "dqrxfer_tus_requests", "tus requests by method and status", ["method", "status"]
        )
        self.received_bytes = Counter(
            "dqrxfer_tus_received_bytes", "upload bytes written to the store"
        )
        self.created = Counter("dqrxfer_tus_uploads_created", "uploads created")
        self.finished = Counter("dqrxfer_tus_uploads_finished", "uploads whose last byte arrived")
        self.terminated = Counter("dqrxfer_tus_uploads_terminated", "uploads terminated (DELETE)")
        self.open = Gauge(
            "dqrxfer_tus_uploads_open",
            "uploads receiving data right now (requests streaming a body)",
            multiprocess_mode="livesum",
        )
        self.lock_wait = Histogram(
            "dqrxfer_tus_lock_wait_seconds",
            "time spent waiting for an upload's lock",
            buckets=LOCK_WAIT_BUCKETS,
        )
        self.lock_waiters = Gauge(
            "dqrxfer_tus_lock_waiters",
            "requests waiting for an upload's lock right now",
            multiprocess_mode="livesum",
        )
        self.lock_timeouts = Counter(
            "dqrxfer_tus_lock_timeouts", "requests refused with 423 after waiting for a lock"
        )
        self.taken_over = Counter(
            "dqrxfer_tus_taken_over",
            "requests whose silent body let go of its upload for another request",
        )

    def count_request(self, method: str, status: int) -> None:
        method = method if method in KNOWN_METHODS else "other"
        self.requests.labels(method=method, status=str(status)).inc()


_metrics: TusMetrics | None = None
_metrics_lock = threading.Lock()


def tus_metrics() -> TusMetrics:
    """This process's metrics, created on first use."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = TusMetrics()
        return _metrics


def metrics_view() -> Response:
    """The Prometheus text exposition of every worker's metrics."""
    from flask import Response
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    tus_metrics()
    registry: Any = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        settled_files_collector(multiprocess.MultiProcessCollector)(registry)
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def settled_files_collector(base: Any) -> Any:
    """prometheus_client's multiprocess collector, without the files that a
    process has created but not sized yet.

    A process creates its file empty and sizes it a moment later
    (prometheus_client's ``MmapedDict``); a scrape that reads it in between
    fails whole on the missing header (client_python issue #1199), so one
    worker starting, or killed in that moment, would make ``/metrics``
    answer 500.  Such a file holds no value yet: leaving it out loses none.
    """

    class SettledFilesCollector(base):  # type: ignore[misc]
        def collect(self) -> Any:
            files = [
                path
                for path in glob.glob(os.path.join(self._path, "*.db"))
                if _size(path) >= _HEADER_BYTES
            ]
            return self.merge(files, accumulate=True)

    return SettledFilesCollector


#: A multiprocess file's header: the bytes it uses (4) and padding to 8.
_HEADER_BYTES = 8


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0  # a dead worker's file removed since the listing


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (gunicorn's ``child_exit`` hook)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
