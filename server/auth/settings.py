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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..configkeys import (
    BOOLEAN,
    TABLE,
    Check,
    ConfigError,
    Invalid,
    choice,
    integer,
    key,
    list_of,
    network,
    path,
    read_table,
    text,
)
from .rules import PatternError, Rule, compile_pattern

MODES = ("none", "gssapi", "remote-user")
DEFAULT_SESSION_LIFETIME = 600
DEFAULT_COOKIE_NAME = "dqrxfer_session"
DEFAULT_REMOTE_USER_HEADER = "X-Remote-User"
SECRET_FILE_NAME = "session.key"
MIN_SECRET_LENGTH = 32

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AuthConfigError(ConfigError):
    """A bad ``[auth]`` key or ``serve`` option; the message names it."""


def _secret(value: object) -> str:
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        raise Invalid()
    return value


def _cookie_secure(value: object) -> bool | None:
    if value == "auto":
        return None
    if not isinstance(value, bool):
        raise Invalid()
    return value


def _header(value: object) -> str:
    return text().convert(value).strip()


NAME = text("a non-empty string", minimum=1)
NETWORKS = list_of(network(), "a list of IP addresses or networks", single=True)
#: A list of names, or one name; "*" alone means all.
NAMES = list_of(NAME, "a list of non-empty strings", single=True)


def _array_of_tables(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise Invalid()
    return value


@dataclass(frozen=True)
class AuthSettings:
    """How the server authenticates callers and what they may do: the
    ``[auth]`` table (its keys are the fields declared with ``key``)."""

    mode: str = key(choice(*MODES), "none")
    #: gssapi: the service keytab (else ``$KRB5_KTNAME``, else the system keytab).
    keytab: Path | None = key(path(), None)
    #: gssapi: accept only this service principal (default: any key in the keytab).
    service_principal: str | None = key(NAME, None)
    #: remote-user: peers whose REMOTE_USER / header is believed.
    trusted_proxies: tuple[Network, ...] = key(NETWORKS, ())
    #: remote-user: the header the proxy sets ("" = only the WSGI REMOTE_USER).
    remote_user_header: str = key(Check("a string", _header), DEFAULT_REMOTE_USER_HEADER)
    #: gssapi: seconds a session cookie stays valid after a handshake (0 = no cookies).
    session_lifetime: int = key(integer(0, 86400, "seconds"), DEFAULT_SESSION_LIFETIME)
    #: where the cookie-signing secret lives (created 0600 when missing).
    session_secret_file: Path = key(path(), Path(SECRET_FILE_NAME))
    #: the secret itself, for deployments that inject it (overrides the file).
    session_secret: str | None = key(
        Check(f"a string of at least {MIN_SECRET_LENGTH} characters", _secret, secret=True),
        None,
        repr=False,
    )
    cookie_name: str = key(
        text("letters, digits, _ and - only", pattern=r"[A-Za-z0-9_-]+"), DEFAULT_COOKIE_NAME
    )
    #: None = Secure exactly when the request came over HTTPS.
    cookie_secure: bool | None = key(Check('true, false or "auto"', _cookie_secure), None)
    #: whether the read-only report endpoints answer without authentication.
    public_read: bool = key(BOOLEAN, True)
    rules: tuple[Rule, ...] = key(
        Check("an array of tables ([[auth.rules]])", _array_of_tables), ()
    )


@dataclass(frozen=True)
class RuleTable:
    """One ``[[auth.rules]]`` table, checked; :func:`_parse_rules` makes it a :class:`Rule`."""

    principals: tuple[str, ...] = key(NAMES, required=True)
    name: str | None = key(NAME, None)
    projects: tuple[str, ...] = key(NAMES, ("*",))
    sites: tuple[str, ...] = key(NAMES, ("*",))


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
    entries: Sequence[object], projects: Sequence[str], sites: Sequence[str]
) -> tuple[Rule, ...]:
    projects_by_lower = {name.lower(): name for name in projects}
    rules = []
    for index, entry in enumerate(entries):
        where = f"auth.rules[{index}]."
        rule = RuleTable(**read_table(RuleTable, TABLE(entry, f"auth.rules[{index}]"), where))
        patterns = []
        for pattern in rule.principals:
            try:
                patterns.append(compile_pattern(pattern))
            except PatternError as error:
                raise AuthConfigError(f"{where}principals: {error}") from None
        rule_projects = _choose(rule.projects, projects_by_lower, f"{where}projects")
        rule_sites = _choose(rule.sites, {site.lower(): site for site in sites}, f"{where}sites")
        rules.append(
            Rule(rule.name or f"auth.rules[{index}]", tuple(patterns), rule_projects, rule_sites)
        )
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
    values = read_table(AuthSettings, TABLE({} if table is None else table, "auth"), "auth.")
    values.setdefault("session_secret_file", data_dir / SECRET_FILE_NAME)
    if "rules" in values:
        values["rules"] = _parse_rules(values["rules"], projects, sites)
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
    addresses = {str(info[4][0]) for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses
    )
