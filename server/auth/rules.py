"""Authorization: which principal may upload to which project, as which site.

A rule names principals (exact names or patterns), the projects it covers and
the sites its principals may upload as.  A principal may create an upload
when at least one rule matching it and the project lists the site.

Patterns: ``*`` matches any run of characters within one name component (it
never crosses ``/`` or ``@``), ``?`` one such character.  So ``*@LIGO.ORG``
matches people (``albert.einstein@LIGO.ORG``) but no robot
(``dqr/robot/ldas.ligo-la.caltech.edu@LIGO.ORG``), and
``dqr/robot/*.ligo-la.caltech.edu@LIGO.ORG`` matches the LLO robots.  The realm
compares case-insensitively (Shibboleth passes ``ligo.org``), the rest exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class PatternError(ValueError):
    """A principal pattern that cannot be used."""


class AuthorizationError(Exception):
    """The caller may not do this; the message names the rule (HTTP 403)."""


@dataclass(frozen=True)
class Pattern:
    text: str
    regex: re.Pattern[str]

    def matches(self, principal: str) -> bool:
        return self.regex.fullmatch(principal) is not None


def _glob(text: str) -> str:
    parts = []
    for char in text:
        if char == "*":
            parts.append("[^/@]*")
        elif char == "?":
            parts.append("[^/@]")
        else:
            parts.append(re.escape(char))
    return "".join(parts)


def compile_pattern(text: str) -> Pattern:
    """Compile a principal or pattern; it must name a realm (``...@REALM``)."""
    text = text.strip()
    if not text or any(char.isspace() for char in text):
        raise PatternError(f"{text!r}: a principal has no spaces")
    name, at, realm = text.rpartition("@")
    if not at or not name or not realm:
        raise PatternError(f"{text!r}: name a realm, e.g. *@LIGO.ORG or name/robot/host@LIGO.ORG")
    return Pattern(text, re.compile(f"{_glob(name)}@(?i:{_glob(realm)})"))


@dataclass(frozen=True)
class Rule:
    name: str
    principals: tuple[Pattern, ...]
    #: None = every project
    projects: tuple[str, ...] | None
    #: None = every site
    sites: tuple[str, ...] | None

    def covers(self, principal: str, project: str) -> bool:
        if self.projects is not None and project not in self.projects:
            return False
        return any(pattern.matches(principal) for pattern in self.principals)

    def allows_site(self, site: str) -> bool:
        return self.sites is None or site in self.sites


class Policy:
    """The configured rules, asked once per created upload."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules

    def authorize(self, principal: str | None, project: str, site: str) -> Rule:
        """Return the rule that allows the upload, or raise :class:`AuthorizationError`."""
        if principal is None:
            raise AuthorizationError("uploads need an authenticated principal")
        if not self.rules:
            raise AuthorizationError(
                f"{principal} may not upload: the server has no auth.rules, so nobody may"
            )
        covering = [rule for rule in self.rules if rule.covers(principal, project)]
        if not covering:
            raise AuthorizationError(
                f"{principal} may not upload to project {project}: no rule in auth.rules "
                "lists this principal for this project"
            )
        for rule in covering:
            if rule.allows_site(site):
                return rule
        allowed = sorted({s for rule in covering for s in rule.sites or ()})
        names = ", ".join(repr(rule.name) for rule in covering)
        which = f"rule {names} allows" if len(covering) == 1 else f"rules {names} allow"
        raise AuthorizationError(
            f"{principal} may not upload to project {project} as site {site}: "
            f"{which} only {', '.join(allowed)}"
        )
