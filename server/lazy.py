"""Names a package re-exports from its modules, imported on first use (PEP 562).

Importing any module of a package runs the package's ``__init__`` first; one
that imported every module it re-exports would make ``dqrxfer-server db
current`` import Flask and every request handler (a second of a command's
start on a quiet machine)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(package: str, homes: dict[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: ``homes`` maps each of its
    modules (``".guard"``) to the names it provides."""
    home_of = {name: module for module, names in homes.items() for name in names}
    namespace = vars(import_module(package))

    def __getattr__(name: str) -> Any:
        if name not in home_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(home_of[name], package), name)
        namespace[name] = value  # found directly from now on
        return value

    return __getattr__
