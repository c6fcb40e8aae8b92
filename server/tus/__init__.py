"""A tus 1.0.0 resumable-upload server for Flask.

This package is the protocol and nothing else: it knows uploads, offsets and
headers, never reports.  An application mounts :func:`make_blueprint` with a
:class:`~.store.Store`, a :class:`~.locker.Locker` and :class:`~.hooks.TusHooks`;
the domain plugs in through the hooks.  The modules, one job each:

``blueprint``   HTTP: headers, status codes, one function per verb
``lifecycle``   rules across requests: finishing, concatenation, recovery, expiry
``store``       where bytes and state live (files on a POSIX filesystem)
``locker``      one writer per upload (``flock``); ``pglocker`` (PostgreSQL)
``hooks``       the application's entry points
``checksum``    ``Upload-Checksum``; ``metadata``: ``Upload-Metadata``
``expiration``  ``Upload-Expires``; ``cors``: browsers on other origins
``metrics``     Prometheus counters and the ``/metrics`` view
``errors``      every protocol error with its status, in one place
"""

from .blueprint import make_blueprint
from .errors import TusError
from .hooks import HookRejection, TusHooks
from .lifecycle import TusOptions, Uploads
from .locker import FileLocker, Locker
from .store import FileStore, Store, UploadInfo

__all__ = [
    "FileLocker",
    "FileStore",
    "HookRejection",
    "Locker",
    "Store",
    "TusError",
    "TusHooks",
    "TusOptions",
    "UploadInfo",
    "Uploads",
    "make_blueprint",
]
