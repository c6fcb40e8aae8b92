"""Where the client sends things: the server URL, resolved once.

Order: ``-s/--server``, then ``$DQRXFER_SERVER``, then ``server =`` in the
user config file (``$XDG_CONFIG_HOME/dqrxfer/client.toml``), then the central
default.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

DEFAULT_SERVER = "https://dqr.ligo.caltech.edu"


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "dqrxfer" / "client.toml"


def resolve_server(option: str | None) -> str:
    if option:
        return option.rstrip("/")
    from_env = os.environ.get("DQRXFER_SERVER")
    if from_env:
        return from_env.rstrip("/")
    path = user_config_path()
    if path.is_file():
        with open(path, "rb") as handle:
            server = tomllib.load(handle).get("server")
        if isinstance(server, str) and server:
            return server.rstrip("/")
    return DEFAULT_SERVER
