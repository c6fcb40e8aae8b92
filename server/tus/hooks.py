"""Hooks: how an application plugs its rules into the protocol.

Subclass :class:`TusHooks` and override what you need.  A hook refuses by
raising :class:`HookRejection` with an HTTP status and a message, which the
client receives as the response.

Partial uploads of the concatenation extension (``info.is_partial``) are only
pieces of a final upload (``info.is_final``, whose ``info.partials`` lists the
pieces).  Every hook is called for them too, so that an application can
validate, count or authorise them like any upload (the reports application
requires their metadata to name the report of their final upload).

``pre_create`` may set ``info.size_limit`` (and ``info.size_limit_rule``,
naming it in refusals): the protocol then keeps the upload within it on a
deferred length, on every PATCH and on a final upload's concatenation.
"""

from __future__ import annotations

from .datastore import UploadInfo
from .errors import TusError


class HookRejection(TusError):
    """Raised by a hook to refuse a request with ``status`` and ``message``."""


class TusHooks:
    #: True when ``post_finish`` publishes a finished upload somewhere else
    #: and makes it durable there (as the reports application does): the store
    #: then puts only the upload's data on disk before the hook runs, not its
    #: own state, which nobody needs once the upload is published.  Partial
    #: uploads of the concatenation extension keep their state durable always.
    publishes_finished_uploads: bool = False

    def pre_create(self, info: UploadInfo) -> None:
        """Called before an upload is created; raise :class:`HookRejection` to refuse.

        May fill ``info.owner`` and change ``info.metadata``.  Nothing exists
        in the store yet.  ``info.concat`` tells a partial (``"partial"``) or
        final (``"final"``) upload of the concatenation extension; a final
        upload's ``length`` is None while some partial's length is unknown.
        """

    def post_create(self, info: UploadInfo) -> None:
        """Called after the upload exists in the store."""

    def post_receive(self, info: UploadInfo, received: int) -> None:
        """Called after a request stored ``received`` bytes (``info.offset`` is
        the new offset), also when the client went away in the middle."""

    def post_finish(self, info: UploadInfo) -> dict[str, str]:
        """Called when the last byte is stored, with the upload's lock held.

        May raise :class:`HookRejection` to tell the client that the finished
        upload was refused.  Must be idempotent: after a crash between the
        last byte and the record that this hook returned, it runs again (on
        the next HEAD, PATCH or ``cleanup``); and when a client re-sends the
        last PATCH of a completed upload (it lost the answer), it runs again
        and should give the same answer.  Returns extra response headers.
        """
        return {}

    def post_terminate(self, info: UploadInfo) -> None:
        """Called after a client terminated an upload (DELETE)."""

    def post_expire(self, info: UploadInfo) -> None:
        """Called after housekeeping removed an expired upload."""
