"""A tus 1.0.0 resumable-upload server for Flask.

This package is the protocol and nothing else: it knows uploads, offsets and
headers, never reports.  An application mounts :func:`make_blueprint` with a
:class:`~.datastore.Store`, a :class:`~.locker.Locker` and
:class:`~.hooks.TusHooks` (or :func:`~.blueprint.blueprint_for` with the
:class:`~.lifecycle.Uploads` it built of them); the domain plugs in through
the hooks.  The modules, one job each:

``blueprint``   HTTP: headers, status codes, one function per verb
``body``        reading a request body as it arrives (a stalled body ends the request)
``lifecycle``   rules across requests: finishing, concatenation, recovery, expiry
``datastore``   what a store must do (``Store``, ``UploadInfo``, capabilities)
``store``       ``FileStore``: bytes and state as files on a POSIX filesystem;
                ``fsyncpolicy``: the names of its fsync policies
``digest``      SHA-256 computed while the bytes arrive; ``syncing``: fsyncs
``locker``      one writer per upload (``flock``); ``pglocker`` (PostgreSQL;
                ``keepalive``: its dead-host timeout)
``pools``       per-process thread pools (safe across ``fork``)
``hooks``       the application's entry points
``checksum``    ``Upload-Checksum``; ``metadata``: ``Upload-Metadata``
``blocks``      ``Upload-Block-Checksum`` (ours): a cut body keeps its verified blocks
``expiration``  ``Upload-Expires``; ``cors``: browsers on other origins
``metrics``     Prometheus counters and the ``/metrics`` view
``errors``      every protocol error with its status, in one place
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .blueprint import blueprint_for, make_blueprint, uploads_of
    from .datastore import HashingStore, Store, UploadInfo
    from .errors import TusError
    from .hooks import HookRejection, TusHooks
    from .lifecycle import TusOptions, Uploads
    from .locker import FileLocker, Locker
    from .store import FileStore

__all__ = [
    "FileLocker",
    "FileStore",
    "HashingStore",
    "HookRejection",
    "Locker",
    "Store",
    "TusError",
    "TusHooks",
    "TusOptions",
    "UploadInfo",
    "Uploads",
    "blueprint_for",
    "make_blueprint",
    "uploads_of",
]

# Imported when first used (.lazy says why).
__getattr__ = lazy_exports(
    __name__,
    {
        ".blueprint": ("blueprint_for", "make_blueprint", "uploads_of"),
        ".datastore": ("HashingStore", "Store", "UploadInfo"),
        ".errors": ("TusError",),
        ".hooks": ("HookRejection", "TusHooks"),
        ".lifecycle": ("TusOptions", "Uploads"),
        ".locker": ("FileLocker", "Locker"),
        ".store": ("FileStore",),
    },
)
