"""The dqrxfer server (``pip install dqrxfer[server]``): a Flask app with the
tus endpoint at ``/files/``, the reports domain and the JSON API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]

# Imported when first used (.lazy says why).
__getattr__ = lazy_exports(
    __name__,
    {
        ".app": ("create_app",),
    },
)
