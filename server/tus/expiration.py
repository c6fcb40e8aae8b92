"""The expiration extension: when an unfinished upload may be removed.

An upload expires ``period`` seconds after its data file last changed (its
creation or its last PATCH), so an upload that is being worked on never
expires.  Only uploads that are still unfinished can expire, and partial
uploads of the concatenation extension, which exist only to be concatenated.
A finished upload or final upload is kept (the application decides what
becomes of it).
"""

from __future__ import annotations

from email.utils import formatdate

from .datastore import UploadInfo


def expires_at(info: UploadInfo, period: float) -> float | None:
    """The POSIX time after which ``info`` is expired, or None if it never expires."""
    if period <= 0 or not (info.is_partial or not info.finished):
        return None
    return info.modified + period


def is_expired(info: UploadInfo, period: float, now: float) -> bool:
    moment = expires_at(info, period)
    return moment is not None and moment <= now


def http_date(moment: float) -> str:
    """RFC 9110 IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return formatdate(moment, usegmt=True)
