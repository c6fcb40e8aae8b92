"""Who is calling.  The ``none`` mode (development, loopback only) knows nobody."""

from __future__ import annotations

from flask import current_app


def current_principal() -> str | None:
    """The authenticated principal of the current request, or None."""
    if current_app.config["DQRXFER_SETTINGS"].auth_mode == "none":
        return None
    return None
