"""Hints ("did you mean ...?") for the mistakes users make most with a
report's identity, and the server's refusal of a project it does not have
turned into a usage error listing the projects it has."""

from __future__ import annotations

import re

from . import contract
from .errors import RefusedError, UsageError

#: Detector names people write for a site (LIGO Livingston's L1, ...).
DETECTOR_SITES = {"l1": "llo", "h1": "lho", "v1": "virgo", "k1": "kagra"}

_GRACEID_PARTS = re.compile(r"([A-Za-z]+)(\d+(?:\.\d+)?)([A-Za-z]*)", re.ASCII)
#: The server's refusal of an unknown project, as the contract words it.
_UNKNOWN_PROJECT = re.compile(
    rf"^{contract.KEY_PROJECT}: must be one of ([^()]+?) \(got '([^']*)'\)"
)


def site_hint(value: str) -> str | None:
    """The site a detector name stands for (``L1`` -> ``llo``)."""
    return DETECTOR_SITES.get(value.strip().lower())


def graceid_hint(value: str) -> str | None:
    """The valid graceid ``value`` differs from only in letter case
    (``s230518h`` -> ``S230518h``, ``gw230518a`` -> ``GW230518A``)."""
    match = _GRACEID_PARTS.fullmatch(value.strip())
    if match is None:
        return None
    prefix, digits, suffix = match.groups()
    for candidate in (
        prefix.upper() + digits + suffix.lower(),
        prefix.upper() + digits + suffix.upper(),
    ):
        if candidate == value:
            continue
        try:
            return contract.validate_graceid(candidate)
        except contract.ContractError:
            continue
    return None


def with_hint(error: contract.ContractError) -> str:
    """The contract's message, with a "did you mean" when there is a likely one."""
    value = str(error.value) if error.value is not None else ""
    guess = None
    if error.field == contract.KEY_UPLOADER:
        guess = site_hint(value)
    elif error.field == contract.KEY_GRACEID:
        guess = graceid_hint(value)
    return f"{error}; did you mean {guess}?" if guess else str(error)


class UnknownProjectError(UsageError):
    """The server has no such project: every upload to it would be refused alike."""


def unknown_project(error: RefusedError) -> UnknownProjectError | None:
    """The server's refusal of a project it does not have, as a usage error
    listing the projects it has (None for any other refusal)."""
    match = _UNKNOWN_PROJECT.match(error.server_message)
    if match is None:
        return None
    projects, value = match.groups()
    return UnknownProjectError(
        f"project {value!r}: the server has no such project (it has {projects})"
    )
