"""The client's settings, resolved in one place: where the commands send things.

The server URL comes from ``-s/--server``, then ``$DQRXFER_SERVER``, then
``server =`` in the user config file (``$XDG_CONFIG_HOME/dqrxfer/client.toml``),
then the central default.  Each is checked when the options are read, before
any traffic, and a bad one is refused naming the value and where it came
from: a URL without a scheme (``127.0.0.1:8080``, the usual typo) would
otherwise be retried for minutes as if the server were down.
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import UsageError

DEFAULT_SERVER = "https://dqr.ligo.caltech.edu"
SERVER_VARIABLE = "DQRXFER_SERVER"
#: The keys the user config file may hold.
CONFIG_KEYS = ("server",)

log = logging.getLogger("dqr-xfer")


@dataclass(frozen=True)
class Server:
    """The server URL (no trailing slash) and where it came from, in words
    for messages (``-s/--server``, ``environment variable DQRXFER_SERVER``...)."""

    url: str
    source: str


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "dqrxfer" / "client.toml"


def read_user_config(path: Path) -> dict[str, Any]:
    """The user config file's keys ({} if there is none); a file that is not
    TOML is refused naming the file and the line, an unknown key is warned
    about (a misspelt ``sever =`` would otherwise be ignored silently)."""
    if not path.is_file():
        return {}
    try:
        with open(path, "rb") as handle:
            config = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        # The message ends with "(at line 3, column 9)".
        raise UsageError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise UsageError(f"{path}: cannot be read: {error.strerror or error}") from None
    for key in sorted(set(config) - set(CONFIG_KEYS)):
        log.warning("%s: unknown key %r ignored (known: %s)", path, key, ", ".join(CONFIG_KEYS))
    return config


def check_server_url(url: str, source: str) -> str:
    """``url`` without trailing slashes, if it is an http(s) URL with a host;
    otherwise a :class:`UsageError` naming it and ``source``."""
    value = url.strip()

    def refuse(reason: str) -> UsageError:
        return UsageError(f"server URL {url!r} (from {source}): {reason}")

    if any(char.isspace() or not char.isprintable() for char in value):
        raise refuse("contains spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as error:
        raise refuse(f"malformed ({error})") from None
    if not parts.scheme or not parts.netloc:
        if "://" not in value:
            raise refuse(f"no scheme: did you mean 'https://{value.rstrip('/')}'?")
        raise refuse("no host")
    if parts.scheme.lower() not in ("http", "https"):
        raise refuse(f"the scheme must be http or https, not {parts.scheme!r}")
    if not parts.hostname:
        raise refuse("no host")
    if parts.query or parts.fragment:
        raise refuse("a server URL has no query ('?') or fragment ('#')")
    return value.rstrip("/")


def resolve_server(option: str | None) -> Server:
    """The server to talk to, checked (see the module's docstring)."""
    config_path = user_config_path()
    config = read_user_config(config_path)
    if option:
        return Server(check_server_url(option, "-s/--server"), "-s/--server")
    from_env = os.environ.get(SERVER_VARIABLE)
    if from_env:
        source = f"environment variable {SERVER_VARIABLE}"
        return Server(check_server_url(from_env, source), source)
    value = config.get("server")
    if value is not None:
        source = f"'server' in {config_path}"
        if not isinstance(value, str) or not value:
            raise UsageError(f"{config_path}: 'server' must be a URL in quotes (got {value!r})")
        return Server(check_server_url(value, source), source)
    return Server(DEFAULT_SERVER, "the default")
