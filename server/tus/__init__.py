"""A tus 1.0.0 resumable-upload server for Flask.

This package is the protocol and nothing else: it knows uploads, offsets and
headers, never reports.  An application mounts :func:`make_blueprint` with a
:class:`~.store.Store`, a :class:`~.locker.Locker` and :class:`~.hooks.TusHooks`;
the domain plugs in through the hooks.
"""

from .blueprint import TusOptions, make_blueprint
from .errors import TusError
from .hooks import HookRejection, TusHooks
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
    "make_blueprint",
]
