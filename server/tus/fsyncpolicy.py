"""The fsync policies of :class:`~.store.FileStore`: their names, and the
value of the ``fsync`` setting each is read from.

Apart from :mod:`.store` so that the configuration loader can check the
setting without importing the store (ctypes, the digests, the thread pools).
"""

from __future__ import annotations

FSYNC_ALWAYS = "always"
FSYNC_COMPLETE = "complete"
FSYNC_NEVER = "never"
FSYNC_POLICIES = (FSYNC_ALWAYS, FSYNC_COMPLETE, FSYNC_NEVER)


def fsync_policy(value: str | bool) -> str:
    """The policy ``value`` names; booleans are the older spelling
    (``true`` = ``"always"``, ``false`` = ``"never"``)."""
    if value is True:
        return FSYNC_ALWAYS
    if value is False:
        return FSYNC_NEVER
    if value not in FSYNC_POLICIES:
        raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {value!r}")
    return str(value)
