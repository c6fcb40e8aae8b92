"""The ``[auth]`` section of the server configuration, checked once at start.

Every mistake is reported with the key that holds it (``auth.rules[2].sites:
...``), so an operator can fix the file without reading code.  This module
imports neither Flask nor gssapi: the configuration loader uses it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .rules import PatternError, Rule, compile_pattern

MODES = ("none", "gssapi", "remote-user")
DEFAULT_SESSION_LIFETIME = 600
DEFAULT_COOKIE_NAME = "dqrxfer_session"
DEFAULT_REMOTE_USER_HEADER = "X-Remote-User"
SECRET_FILE_NAME = "session.key"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AuthConfigError(ValueError):
    """A bad ``[auth]`` key or ``serve`` option; the message names it."""


@dataclass(frozen=True)
class AuthSettings:
    """How the server authenticates callers and what they may do."""

    mode: str = "none"
    #: gssapi: the service keytab (else ``$KRB5_KTNAME``, else the system keytab).
    keytab: Path | None = None
    #: gssapi: accept only this service principal (default: any key in the keytab).
    service_principal: str | None = None
    #: remote-user: peers whose REMOTE_USER / header is believed.
    trusted_proxies: tuple[Network, ...] = ()
    #: remote-user: the header the proxy sets ("" = only the WSGI REMOTE_USER).
    remote_user_header: str = DEFAULT_REMOTE_USER_HEADER
    #: gssapi: seconds a session cookie stays valid after a handshake (0 = no cookies).
    session_lifetime: int = DEFAULT_SESSION_LIFETIME
    #: where the cookie-signing secret lives (created 0600 when missing).
    session_secret_file: Path = Path(SECRET_FILE_NAME)
    #: the secret itself, for deployments that inject it (overrides the file).
    session_secret: str | None = field(default=None, repr=False)
    cookie_name: str = DEFAULT_COOKIE_NAME
    #: None = Secure exactly when the request came over HTTPS.
    cookie_secure: bool | None = None
    #: whether the read-only report endpoints answer without authentication.
    public_read: bool = True
    rules: tuple[Rule, ...] = ()


_KNOWN_KEYS = {
    "mode",
    "keytab",
    "service_principal",
    "trusted_proxies",
    "remote_user_header",
    "session_lifetime",
    "session_secret_file",
    "session_secret",
    "cookie_name",
    "cookie_secure",
    "public_read",
    "rules",
}
_RULE_KEYS = {"name", "principals", "projects", "sites"}


def _typed(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise AuthConfigError(f"{where}{key}: must be {names} (got {value!r})")
    return value


def _string_list(table: dict[str, Any], key: str, where: str) -> list[str]:
    value = table[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AuthConfigError(f"{where}{key}: must be a list of non-empty strings")
    return value


def parse_mode(value: object, where: str = "auth.mode") -> str:
    if value not in MODES:
        raise AuthConfigError(f"{where}: must be one of {', '.join(MODES)} (got {value!r})")
    return str(value)


def parse_proxy(value: str, where: str) -> Network:
    """An address or a network in CIDR notation."""
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise AuthConfigError(
            f"{where}: {value!r} is not an IP address or network (e.g. 127.0.0.1, 10.0.0.0/8)"
        ) from None


def _parse_rules(
    entries: object, projects: Sequence[str], sites: Sequence[str]
) -> tuple[Rule, ...]:
    if not isinstance(entries, list):
        raise AuthConfigError("auth.rules: must be an array of tables ([[auth.rules]])")
    projects_by_lower = {name.lower(): name for name in projects}
    rules = []
    for index, entry in enumerate(entries):
        where = f"auth.rules[{index}]."
        if not isinstance(entry, dict):
            raise AuthConfigError(f"auth.rules[{index}]: must be a table")
        unknown = sorted(set(entry) - _RULE_KEYS)
        if unknown:
            raise AuthConfigError(f"{where}{unknown[0]}: unknown key")
        if "principals" not in entry:
            raise AuthConfigError(f"{where}principals: is required")
        name = _typed(entry, "name", str, where) if "name" in entry else f"auth.rules[{index}]"
        patterns = []
        for pattern in _string_list(entry, "principals", where):
            try:
                patterns.append(compile_pattern(pattern))
            except PatternError as error:
                raise AuthConfigError(f"{where}principals: {error}") from None
        rule_projects = _choose(
            _string_list(entry, "projects", where) if "projects" in entry else ["*"],
            projects_by_lower,
            f"{where}projects",
        )
        rule_sites = _choose(
            _string_list(entry, "sites", where) if "sites" in entry else ["*"],
            {site.lower(): site for site in sites},
            f"{where}sites",
        )
        rules.append(Rule(name, tuple(patterns), rule_projects, rule_sites))
    return tuple(rules)


def _choose(values: Iterable[str], known: dict[str, str], where: str) -> tuple[str, ...] | None:
    """``["*"]`` means all (None); otherwise every value must be configured."""
    values = list(values)
    if "*" in values:
        if len(values) > 1:
            raise AuthConfigError(f'{where}: "*" stands alone')
        return None
    chosen = []
    for value in values:
        if value.lower() not in known:
            raise AuthConfigError(
                f"{where}: {value!r} is not configured (known: {', '.join(known.values())})"
            )
        chosen.append(known[value.lower()])
    return tuple(chosen)


def load_auth_settings(
    table: object, data_dir: Path, projects: Sequence[str], sites: Sequence[str]
) -> AuthSettings:
    """Build :class:`AuthSettings` from the ``[auth]`` table (absent = ``none``)."""
    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise AuthConfigError("auth: must be a table ([auth])")
    unknown = sorted(set(table) - _KNOWN_KEYS)
    if unknown:
        raise AuthConfigError(f"auth.{unknown[0]}: unknown key")
    where = "auth."
    values: dict[str, Any] = {
        "session_secret_file": data_dir / SECRET_FILE_NAME,
    }
    if "mode" in table:
        values["mode"] = parse_mode(table["mode"])
    if "keytab" in table:
        values["keytab"] = Path(_typed(table, "keytab", str, where))
    if "service_principal" in table:
        values["service_principal"] = _typed(table, "service_principal", str, where)
    if "trusted_proxies" in table:
        values["trusted_proxies"] = tuple(
            parse_proxy(value, f"{where}trusted_proxies")
            for value in _string_list(table, "trusted_proxies", where)
        )
    if "remote_user_header" in table:
        values["remote_user_header"] = _typed(table, "remote_user_header", str, where).strip()
    if "session_lifetime" in table:
        lifetime = _typed(table, "session_lifetime", int, where)
        if not 0 <= lifetime <= 86400:
            raise AuthConfigError(f"{where}session_lifetime: must be 0..86400 seconds")
        values["session_lifetime"] = lifetime
    if "session_secret_file" in table:
        values["session_secret_file"] = Path(_typed(table, "session_secret_file", str, where))
    if "session_secret" in table:
        secret = _typed(table, "session_secret", str, where)
        if len(secret) < 32:
            raise AuthConfigError(f"{where}session_secret: must be at least 32 characters")
        values["session_secret"] = secret
    if "cookie_name" in table:
        name = _typed(table, "cookie_name", str, where)
        if not name or not all(c.isalnum() or c in "_-" for c in name):
            raise AuthConfigError(f"{where}cookie_name: letters, digits, _ and - only")
        values["cookie_name"] = name
    if "cookie_secure" in table:
        secure = table["cookie_secure"]
        if secure not in (True, False, "auto"):
            raise AuthConfigError(f'{where}cookie_secure: must be true, false or "auto"')
        values["cookie_secure"] = None if secure == "auto" else secure
    if "public_read" in table:
        values["public_read"] = _typed(table, "public_read", bool, where)
    if "rules" in table:
        values["rules"] = _parse_rules(table["rules"], projects, sites)
    # Whether the combination works (keytab readable, proxies given) is checked
    # by ``serve`` after its options are applied: see :func:`with_overrides`.
    return AuthSettings(**values)


def with_overrides(
    settings: AuthSettings,
    mode: str | None = None,
    keytab: str | None = None,
    trusted_proxies: Sequence[str] | None = None,
) -> AuthSettings:
    """Apply the ``serve`` options ``--auth``, ``--keytab``, ``--trusted-proxy``,
    then :func:`check` the result."""
    changes: dict[str, Any] = {}
    if mode is not None:
        changes["mode"] = parse_mode(mode, "--auth")
    if keytab is not None:
        changes["keytab"] = Path(keytab)
    if trusted_proxies:
        changes["trusted_proxies"] = tuple(
            parse_proxy(value, "--trusted-proxy") for value in trusted_proxies
        )
    return check(replace(settings, **changes))


def check(settings: AuthSettings) -> AuthSettings:
    """Refuse combinations that cannot work."""
    keytab = settings.keytab
    if (
        settings.mode == "gssapi"
        and keytab is not None
        and not (keytab.is_file() and os.access(keytab, os.R_OK))
    ):
        raise AuthConfigError(f"auth.keytab: {settings.keytab} is not a readable file")
    if settings.mode == "remote-user" and not settings.trusted_proxies:
        raise AuthConfigError(
            "auth.trusted_proxies: remote-user mode needs the proxy addresses "
            "(config key or --trusted-proxy ADDR)"
        )
    return settings


def check_listen_address(settings: AuthSettings, host: str) -> None:
    """``none`` is for development: refuse to listen anywhere but loopback."""
    if settings.mode != "none":
        return
    if not is_loopback_host(host):
        raise AuthConfigError(
            f"auth mode none (no authentication) listens on loopback only, not {host!r}: "
            "use --host 127.0.0.1, or --auth gssapi / remote-user"
        )


def is_loopback_host(host: str) -> bool:
    """True when every address ``host`` names is a loopback address."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses
    )
