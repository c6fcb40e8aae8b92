"""X-Forwarded-* honoured only from configured reverse proxies.

Behind Apache or a load balancer, the URLs the server builds (the tus
``Location`` header, report links) must be the ones clients use.  The proxy
says what they are in ``X-Forwarded-For/-Proto/-Host/-Port/-Prefix``; from
anyone else these headers are ignored, so a client cannot make the server
hand out URLs (or client addresses) of its choosing.  Each trusted proxy is
assumed to append one value to each header (werkzeug's ``ProxyFix`` with one
hop).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix


class TrustedProxies:
    def __init__(self, app: Any, proxies: Iterable[str]) -> None:
        self.app = app
        self.networks = [ipaddress.ip_network(proxy, strict=False) for proxy in proxies]
        self.fixed = ProxyFix(app, x_for=0, x_proto=1, x_host=1, x_port=1, x_prefix=1)

    def trusted(self, address: str | None) -> bool:
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.trusted(environ.get("REMOTE_ADDR")):
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)
