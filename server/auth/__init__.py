"""Who is calling, and what they may do.

* :mod:`.settings` — the ``[auth]`` configuration (modes ``none``, ``gssapi``,
  ``remote-user``; keytab; trusted proxies; session cookie; rules);
* :mod:`.negotiate` — SPNEGO with the service keytab (python-gssapi);
* :mod:`.sessions` — signed session cookies after a handshake;
* :mod:`.rules` — per-project allow-lists of principals and their sites;
* :mod:`.guard` — the per-request gate (401/403) and :func:`current_principal`;
* :mod:`.hooks` — authorization in front of the tus ``pre_create`` hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .guard import (
        Authenticator,
        current_principal,
        exempt,
        init_app,
        is_public_read,
        preflight,
        public,
    )
    from .rules import AuthorizationError, Policy
    from .settings import AuthConfigError, AuthSettings, check_listen_address, with_overrides

__all__ = [
    "AuthConfigError",
    "AuthSettings",
    "Authenticator",
    "AuthorizationError",
    "Policy",
    "check_listen_address",
    "current_principal",
    "exempt",
    "init_app",
    "is_public_read",
    "preflight",
    "public",
    "with_overrides",
]

# Imported when first used (.lazy says why).
__getattr__ = lazy_exports(
    __name__,
    {
        ".guard": (
            "Authenticator",
            "current_principal",
            "exempt",
            "init_app",
            "is_public_read",
            "preflight",
            "public",
        ),
        ".rules": ("AuthorizationError", "Policy"),
        ".settings": ("AuthConfigError", "AuthSettings", "check_listen_address", "with_overrides"),
    },
)
