"""Query and path parameters of the JSON API, checked with messages that name
the parameter and the rule (``site: must be one of kagra, lho, llo, virgo``).

Unknown query parameters are ignored (jQuery's cache buster ``_`` must not
break a request)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from dqrxfer import contract

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no", "")


class ParameterError(ValueError):
    """A request parameter breaks a rule; answered with 400 and the message."""

    def __init__(self, name: str, rule: str, value: object = None) -> None:
        self.name = name
        shown = "" if value is None else f" (got {contract.shorten(value, 60)!r})"
        super().__init__(f"{name}: {rule}{shown}")


def graceid(value: str) -> str:
    try:
        return contract.validate_graceid(value)
    except contract.ContractError as error:
        raise ParameterError("graceid", error.rule, value) from None


def flag(args: Mapping[str, str], name: str) -> bool:
    value = args.get(name)
    if value is None:
        return False
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ParameterError(name, "must be 1 or 0 (true or false)", value)


def site(args: Mapping[str, str], sites: tuple[str, ...]) -> str | None:
    return _optional(args, "site", lambda value: contract.validate_site(value, sites))


def project(args: Mapping[str, str], projects: tuple[str, ...]) -> str | None:
    return _optional(args, "project", lambda value: contract.validate_project(value, projects))


def _optional(args: Mapping[str, str], name: str, validate: Callable[[str], str]) -> str | None:
    """The parameter ``name`` checked by the contract's ``validate`` (None if
    absent); a refusal is a :class:`ParameterError` naming the parameter."""
    value = args.get(name)
    if value is None:
        return None
    try:
        return validate(value)
    except contract.ContractError as error:
        raise ParameterError(name, error.rule, value) from None


def moment(args: Mapping[str, str], name: str) -> datetime | None:
    """An ISO 8601 date or date-time; without a zone it is taken as UTC."""
    value = args.get(name)
    if value is None:
        return None
    rule = "must be an ISO 8601 date or date-time, e.g. 2023-05-18 or 2023-05-18T12:00:00Z"
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            parsed = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ParameterError(name, rule, value) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ParameterError(name, "is out of range", value) from None


def limit(args: Mapping[str, str]) -> int:
    value = args.get("limit")
    if value is None:
        return DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LIMIT:
        raise ParameterError("limit", f"must be an integer from 1 to {MAX_LIMIT}", value)
    return int(value)


@dataclass(frozen=True)
class ReportCursor:
    """Where the next page of ``/reports`` starts: after (updated, id)."""

    updated: datetime
    id: int

    def encode(self) -> str:
        raw = f"{self.updated.astimezone(UTC).isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def report_cursor(args: Mapping[str, str]) -> ReportCursor | None:
    value = args.get("cursor")
    if value is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        when, _, ident = raw.partition("|")
        updated = datetime.fromisoformat(when)
        if updated.tzinfo is None or not (ident.isascii() and ident.isdigit()) or len(ident) > 18:
            raise ValueError(raw)
        return ReportCursor(updated.astimezone(UTC), int(ident))
    except (ValueError, UnicodeDecodeError, binascii.Error, OverflowError):
        raise ParameterError("cursor", "is not a cursor given by this API", value) from None


def event_cursor(args: Mapping[str, str]) -> int | None:
    """Events are paged by id (newest first); the cursor is the last id seen."""
    value = args.get("cursor")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ParameterError("cursor", "is not a cursor given by this API", value)
    return int(value)
