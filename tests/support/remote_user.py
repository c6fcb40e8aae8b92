"""Principals for a live server in ``remote-user`` mode: requests sent as the
trusted proxy would send them.

The proxy is simulated by a client that connects from :data:`PROXY` (any
127.0.0.0/8 address is this machine), so the server sees two peers: the
proxy, whose ``X-Remote-User`` it believes, and everyone else."""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter

PROXY = "127.0.0.2"


class SourceAddressAdapter(HTTPAdapter):
    """Connect from a chosen local address (the "proxy")."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def via_proxy() -> requests.Session:
    session = requests.Session()
    session.mount("http://", SourceAddressAdapter(PROXY))
    return session


def as_principal(principal: str) -> requests.Session:
    """A session whose requests the server takes as ``principal``'s."""
    session = via_proxy()
    session.headers["X-Remote-User"] = principal
    return session
