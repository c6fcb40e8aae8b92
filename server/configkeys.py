"""Typed configuration keys: each declared once, each checked once, at load.

A table of the server's TOML file is described by a frozen dataclass whose
fields declared with :func:`key` are the table's keys: the field's name is
the key, its :class:`Check` says what the key may hold (and converts the TOML
value to the field's type), its default applies when the key is absent::

    @dataclass(frozen=True)
    class Settings:
        lock_timeout: float = key(seconds(), 10.0)

:func:`read_table` checks a TOML table against such a class: a key that is
not declared, a value of the wrong type or out of range, a required key that
is missing: each is a :class:`ConfigError` whose message names the key with
its table (``projects.O4.max_upload_size``), the value (never a secret's)
and what is allowed, on one line.  Nothing downstream checks types again.

This module imports neither Flask nor SQLAlchemy.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")

#: Longest value repr shown in a message.
SHOWN_LENGTH = 80


class ConfigError(ValueError):
    """The configuration file is unreadable or has a bad key; the message names it."""


class Invalid(ValueError):
    """Raised by a check's conversion: the value is not allowed (the message,
    if any, says more than the check's ``allowed`` does)."""


def shown(value: object, secret: bool = False) -> str:
    """``value`` as a message shows it: its repr, shortened; a secret string by its length."""
    if secret:
        return f"a string of {len(value)} characters" if isinstance(value, str) else "a secret"
    text = repr(value)
    return text if len(text) <= SHOWN_LENGTH else text[: SHOWN_LENGTH - 3] + "..."


@dataclass(frozen=True)
class Check(Generic[T]):
    """What a key may hold: ``allowed`` in words (``"a positive whole number of
    bytes"``), and ``convert``, which returns the typed value or raises
    :class:`Invalid`.  ``secret``: never show the value; ``show``: how to
    show it otherwise (e.g. without a password)."""

    allowed: str
    convert: Callable[[Any], T]
    secret: bool = False
    show: Callable[[Any], str] | None = None

    def __call__(self, value: object, name: str) -> T:
        try:
            return self.convert(value)
        except Invalid as error:
            got = self.show(value) if self.show is not None else shown(value, self.secret)
            detail = f": {error}" if str(error) else ""
            raise ConfigError(f"{name}: must be {self.allowed} (got {got}){detail}") from None


def key(check: Check[Any], default: Any = dataclasses.MISSING, **options: Any) -> Any:
    """A dataclass field that is a configuration key checked by ``check``.

    ``required=True``: the key must be given.  Other ``options`` go to
    :func:`dataclasses.field` (e.g. ``default_factory``, ``repr``).
    """
    metadata = {"check": check, "required": options.pop("required", False)}
    return dataclasses.field(default=default, metadata=metadata, **options)


def declared_keys(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """The fields of ``cls`` that are configuration keys, by key."""
    return {field.name: field for field in dataclasses.fields(cls) if "check" in field.metadata}


def read_table(cls: type, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The keys ``table`` gives, checked against ``cls`` and converted.

    ``where``: the table's name with a trailing dot (``"projects.O4."``;
    ``""`` at the top level), which every message starts with.
    """
    fields = declared_keys(cls)
    for name in table:
        if name not in fields:
            raise ConfigError(f"{where}{name}: unknown key{_suggestion(name, fields)}")
    for name, field in fields.items():
        if field.metadata["required"] and name not in table:
            raise ConfigError(f"{where}{name}: is required")
    return {
        name: fields[name].metadata["check"](value, where + name) for name, value in table.items()
    }


def with_defaults(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` completed with the defaults of the keys of ``cls`` they lack."""
    completed = dict(values)
    for name, field in declared_keys(cls).items():
        if name in completed:
            continue
        if field.default is not dataclasses.MISSING:
            completed[name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            completed[name] = field.default_factory()
    return completed


def _suggestion(name: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{hint} (known: {', '.join(sorted(known))})"


# -- checks ----------------------------------------------------------------------


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid()
    return value


#: TOML's true or false; a string "false" is not false.
BOOLEAN: Check[bool] = Check("true or false (a TOML boolean, not a string)", _boolean)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(minimum: int = 0, maximum: int | None = None, unit: str = "") -> Check[int]:
    """A whole number from ``minimum`` (to ``maximum``); ``unit`` names what it counts."""
    of = f" of {unit}" if unit else ""
    if maximum is not None:
        allowed = f"a whole number{of} from {minimum} to {maximum}"
    elif minimum == 1:
        allowed = f"a positive whole number{of}"
    else:
        allowed = f"a whole number{of}, at least {minimum}"

    def convert(value: object) -> int:
        if not _is_integer(value):
            raise Invalid()
        assert isinstance(value, int)
        if value < minimum or (maximum is not None and value > maximum):
            raise Invalid()
        return value

    return Check(allowed, convert)


def seconds(positive: bool = False) -> Check[float]:
    """A finite number of seconds: at least 0, or more than 0 if ``positive``."""
    allowed = (
        "a number of seconds greater than 0" if positive else "a number of seconds, at least 0"
    )

    def convert(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid()
        number = float(value)
        if not math.isfinite(number) or number < 0 or (positive and number == 0):
            raise Invalid()
        return number

    return Check(allowed, convert)


def text(allowed: str = "a string", pattern: str | None = None, minimum: int = 0) -> Check[str]:
    """A string of at least ``minimum`` characters (matching ``pattern``)."""
    compiled = re.compile(pattern) if pattern is not None else None

    def convert(value: object) -> str:
        if not isinstance(value, str) or len(value) < minimum or "\0" in value:
            raise Invalid()
        if compiled is not None and not compiled.fullmatch(value):
            raise Invalid()
        return value

    return Check(allowed, convert)


def choice(*choices: str) -> Check[str]:
    """One of ``choices`` (exactly as written)."""

    def convert(value: object) -> str:
        if not isinstance(value, str) or value not in choices:
            raise Invalid()
        return value

    return Check(f"one of {', '.join(choices)}", convert)


def path(absolute: bool = False) -> Check[Path]:
    """A file system path, written as a non-empty string."""
    allowed = "an absolute path (a string starting with /)" if absolute else "a path (a string)"

    def convert(value: object) -> Path:
        if not isinstance(value, str) or not value or "\0" in value:
            raise Invalid()
        result = Path(value)
        if absolute and not result.is_absolute():
            raise Invalid()
        return result

    return Check(allowed, convert)


def network() -> Check[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """An IP address or network in CIDR notation."""

    def convert(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        if not isinstance(value, str):
            raise Invalid()
        try:
            return ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise Invalid() from None

    return Check("an IP address or network (e.g. 127.0.0.1, 10.0.0.0/8)", convert)


def list_of(
    item: Check[U], allowed: str, minimum: int = 0, single: bool = False
) -> Check[tuple[U, ...]]:
    """A list (``allowed`` in words) of values that each pass ``item``, at least
    ``minimum`` of them; ``single``: a lone value stands for a list of one.  A
    bad item is named by its index: ``sites[1]: must be ... (got 1)``."""

    def convert(value: object) -> tuple[Any, ...]:
        if single and not isinstance(value, list):
            value = [value]
        if not isinstance(value, list) or len(value) < minimum:
            raise Invalid()
        return tuple(value)

    def check(value: object, name: str) -> tuple[U, ...]:
        items = Check(allowed, convert)(value, name)
        return tuple(item(element, f"{name}[{index}]") for index, element in enumerate(items))

    return _Composite(allowed, convert, check=check)


@dataclass(frozen=True)
class _Composite(Check[T]):
    """A check made of others (a list of checked items): ``check`` runs them."""

    check: Callable[[object, str], T] | None = None

    def __call__(self, value: object, name: str) -> T:
        assert self.check is not None
        return self.check(value, name)


def _table(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid()
    return value


#: A TOML table (``[name]``); its keys are read by their own declarations.
TABLE: Check[dict[str, Any]] = Check("a table", _table)
