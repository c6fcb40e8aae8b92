"""Hooks: how an application plugs its rules into the protocol.

Subclass :class:`TusHooks` and override what you need.  A hook refuses by
raising :class:`HookRejection` with an HTTP status and a message, which the
client receives as the response.
"""

from __future__ import annotations

from .errors import TusError
from .store import UploadInfo


class HookRejection(TusError):
    """Raised by a hook to refuse a request with ``status`` and ``message``."""


class TusHooks:
    def pre_create(self, info: UploadInfo) -> None:
        """Called before an upload is created; raise :class:`HookRejection` to refuse.

        May fill ``info.owner``.  Nothing exists on disk yet.
        """

    def post_create(self, info: UploadInfo) -> None:
        """Called after the upload exists in the store."""

    def post_receive(self, info: UploadInfo, received: int) -> None:
        """Called after a PATCH stored ``received`` bytes (``info.offset`` is the new offset)."""

    def post_finish(self, info: UploadInfo) -> dict[str, str]:
        """Called when the last byte is stored, before the final response.

        May raise :class:`HookRejection` to tell the client that the finished
        upload was refused.  Must tolerate being called twice for one upload.
        Returns extra response headers.
        """
        return {}

    def post_terminate(self, info: UploadInfo) -> None:
        """Called after an upload was terminated."""
