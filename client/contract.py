"""The report contract shared by client and server.

Everything both sides must agree on lives here: the ``Upload-Metadata`` keys,
the rules for graceids, sites, revisions, sub-directories and file names, and
the naming of report directories.  It imports nothing beyond the standard
library so the client can use it without Flask installed.

Decisions recorded here (see also ``docs/``):

* Sites are matched case-insensitively and stored lower case.  The legacy
  spelling ``EGO`` (the Virgo site) is accepted and mapped to ``virgo``.
* Projects are matched case-insensitively against the configured names and
  the configured spelling is kept (``o4`` -> ``O4``).
* File names and sub-directory components may not start with a dot: report
  trees are served by a web server, and dot files such as ``.htaccess`` would
  change how it serves them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: ``Upload-Metadata`` keys of a report upload.
KEY_PROJECT = "project"
KEY_GRACEID = "graceid"
KEY_UPLOADER = "uploader"
KEY_REVISION = "revision"
KEY_SUBDIR = "subdir"
KEY_FILENAME = "filename"
KEY_KIND = "kind"
KEY_SHA256 = "sha256"

REQUIRED_KEYS = (KEY_PROJECT, KEY_GRACEID, KEY_UPLOADER, KEY_REVISION, KEY_FILENAME, KEY_KIND)
OPTIONAL_KEYS = (KEY_SUBDIR, KEY_SHA256)

KIND_FILE = "file"
KIND_TAR = "tar"
KINDS = (KIND_FILE, KIND_TAR)

DEFAULT_PROJECTS = ("replay", "MDC", "O4", "personal")
DEFAULT_SITES = ("llo", "lho", "virgo", "kagra")
SITE_ALIASES = {"ego": "virgo"}

#: Upper bounds that keep names usable on every filesystem we publish to.
MAX_REVISION = 999_999_999
MAX_FILENAME_BYTES = 255
MAX_SUBDIR_CHARS = 1024
MAX_SUBDIR_DEPTH = 16

#: ``re.ASCII``: ``\d`` must match only 0-9, not the digits of other scripts.
GRACEID_FORMS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("superevent", re.compile(r"[TM]?S\d{6}[a-z]+", re.ASCII)),
    ("confirmed event", re.compile(r"[TM]?GW\d{6}[A-Z]+", re.ASCII)),
    ("event", re.compile(r"[GEHMT]\d{4,}", re.ASCII)),
    ("GPS time", re.compile(r"\d{9,10}\.\d{3}", re.ASCII)),
)
GRACEID_RULE = (
    "must be a superevent (S230518h, TS.../MS...), a confirmed event (GW230518A), "
    "an event (G123456, E/H/M/T...) or a GPS time with 3 decimals (1368449966.167)"
)
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_DIGITS_RE = re.compile(r"[0-9]+")


class ContractError(ValueError):
    """A metadata value breaks a rule of the contract.

    ``field`` names the metadata key and ``rule`` says what was expected, so
    the message can be shown to a user as it is.
    """

    def __init__(self, field: str, rule: str, value: object = None) -> None:
        self.field = field
        self.rule = rule
        self.value = value
        shown = "" if value is None else f" (got {shorten(value)!r})"
        super().__init__(f"{field}: {rule}{shown}")


def shorten(value: object, limit: int = 80) -> str:
    """``value`` as text for an error message, cut to ``limit`` characters."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def has_control_chars(text: str) -> bool:
    """Control and format characters, line and paragraph separators: what
    would let a name hide or break a line where it is shown."""
    return any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in text)


#: The rules every name in a report follows (a file name, a component of a
#: subdir, a component of an archive member's path), in the order they are
#: checked; :func:`broken_name_rule` says which one a name breaks.
NAME_SPECIAL = "special"  #: '', '.' or '..'
NAME_HIDDEN = "hidden"  #: starts with '.': dot files (.htaccess) change how a tree is served
NAME_SEPARATOR = "separator"  #: a backslash or NUL
NAME_CONTROL = "control"  #: a control character (:func:`has_control_chars`)
NAME_TOO_LONG = "too long"  #: more than MAX_FILENAME_BYTES bytes in UTF-8


def broken_name_rule(component: str) -> str | None:
    """The first name rule ``component`` (one path component) breaks, or None.

    Its length counts UTF-8 bytes, with undecodable bytes of a file system
    or archive name (``surrogateescape``) one byte each.
    """
    if component in ("", ".", ".."):
        return NAME_SPECIAL
    if component.startswith("."):
        return NAME_HIDDEN
    if "\\" in component or "\x00" in component:
        return NAME_SEPARATOR
    if has_control_chars(component):
        return NAME_CONTROL
    if len(component.encode("utf-8", "surrogateescape")) > MAX_FILENAME_BYTES:
        return NAME_TOO_LONG
    return None


_NAME_RULES = {
    NAME_SPECIAL: "path components may not be empty, '.' or '..'",
    NAME_HIDDEN: "names may not start with '.'",
    NAME_SEPARATOR: "names may not contain '\\' or NUL",
    NAME_CONTROL: "names may not contain control characters",
    NAME_TOO_LONG: f"names are limited to {MAX_FILENAME_BYTES} bytes",
}


def validate_graceid(value: str) -> str:
    """Return ``value`` if it is a graceid of one of the known forms."""
    for _form, pattern in GRACEID_FORMS:
        if pattern.fullmatch(value):
            return value
    raise ContractError(KEY_GRACEID, GRACEID_RULE, value)


def graceid_form(value: str) -> str:
    """Name the form of a valid graceid (``superevent``, ``event``, ...)."""
    validate_graceid(value)
    return next(form for form, pattern in GRACEID_FORMS if pattern.fullmatch(value))


def validate_site(value: str, sites: Iterable[str] = DEFAULT_SITES) -> str:
    """Return the canonical (lower case) site name, accepting legacy spellings."""
    allowed = {site.lower() for site in sites}
    lowered = value.strip().lower()
    lowered = SITE_ALIASES.get(lowered, lowered)
    if lowered not in allowed:
        raise ContractError(KEY_UPLOADER, f"must be one of {', '.join(sorted(allowed))}", value)
    return lowered


def validate_project(value: str, projects: Iterable[str] = DEFAULT_PROJECTS) -> str:
    """Return the configured spelling of a project name (matched case-insensitively)."""
    by_lower = {project.lower(): project for project in projects}
    try:
        return by_lower[value.strip().lower()]
    except KeyError:
        raise ContractError(
            KEY_PROJECT, f"must be one of {', '.join(sorted(by_lower.values()))}", value
        ) from None


def validate_revision(value: str | int) -> int:
    """Return the revision as an int: a non-negative integer of at most nine digits."""
    rule = f"must be a non-negative integer no greater than {MAX_REVISION}"
    if isinstance(value, bool):
        raise ContractError(KEY_REVISION, rule, value)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DIGITS_RE.fullmatch(value) and len(value) <= 9:
        number = int(value)
    else:
        raise ContractError(KEY_REVISION, rule, value)
    if not 0 <= number <= MAX_REVISION:
        raise ContractError(KEY_REVISION, rule, value)
    return number


def _check_component(field: str, component: str) -> None:
    broken = broken_name_rule(component)
    if broken is not None:
        raise ContractError(field, _NAME_RULES[broken], component)


def validate_subdir(value: str | None) -> str:
    """Return the normalised sub-directory ('' for none).

    A subdir is relative, uses ``/`` as separator, and each component is a
    safe name.  One trailing slash is tolerated and removed; anything that
    would need more normalisation than that (``a//b``, ``./a``) is refused
    rather than guessed at.
    """
    if value is None or value == "":
        return ""
    if "\x00" in value or has_control_chars(value):
        raise ContractError(KEY_SUBDIR, "may not contain control or NUL characters", value)
    if value.startswith("/"):
        raise ContractError(KEY_SUBDIR, "must be a relative path", value)
    if len(value) > MAX_SUBDIR_CHARS:
        raise ContractError(KEY_SUBDIR, f"is limited to {MAX_SUBDIR_CHARS} characters", value)
    trimmed = value[:-1] if value.endswith("/") else value
    components = trimmed.split("/")
    if len(components) > MAX_SUBDIR_DEPTH:
        raise ContractError(KEY_SUBDIR, f"is limited to {MAX_SUBDIR_DEPTH} levels", value)
    for component in components:
        _check_component(KEY_SUBDIR, component)
    return trimmed


def validate_filename(value: str) -> str:
    """Return ``value`` if it is one safe path component."""
    if "/" in value:
        raise ContractError(KEY_FILENAME, "must be a single name without '/'", value)
    _check_component(KEY_FILENAME, value)
    return value


def validate_kind(value: str) -> str:
    if value not in KINDS:
        raise ContractError(KEY_KIND, f"must be one of {', '.join(KINDS)}", value)
    return value


def validate_sha256(value: str | None) -> str | None:
    """Return the lower-case hex digest, or None when absent."""
    if value is None or value == "":
        return None
    if not _SHA256_RE.fullmatch(value):
        raise ContractError(KEY_SHA256, "must be 64 hexadecimal characters", value)
    return value.lower()


@dataclass(frozen=True)
class ReportUpload:
    """A validated description of where one uploaded payload belongs."""

    project: str
    graceid: str
    site: str
    revision: int
    subdir: str
    filename: str
    kind: str
    sha256: str | None

    @property
    def report_relpath(self) -> str:
        """``<graceid>_dir/<graceid>_<site>_<revision>`` relative to the project root."""
        return report_relpath(self.graceid, self.site, self.revision)

    def to_metadata(self) -> dict[str, str]:
        """The ``Upload-Metadata`` mapping a client sends for this upload."""
        metadata = {
            KEY_PROJECT: self.project,
            KEY_GRACEID: self.graceid,
            KEY_UPLOADER: self.site,
            KEY_REVISION: str(self.revision),
            KEY_FILENAME: self.filename,
            KEY_KIND: self.kind,
        }
        if self.subdir:
            metadata[KEY_SUBDIR] = self.subdir
        if self.sha256:
            metadata[KEY_SHA256] = self.sha256
        return metadata


def _required(metadata: Mapping[str, str | None], key: str) -> str:
    value = metadata.get(key)
    if value is None or value == "":
        raise ContractError(key, "is required")
    return value


def validate_metadata(
    metadata: Mapping[str, str | None],
    projects: Iterable[str] = DEFAULT_PROJECTS,
    sites: Iterable[str] = DEFAULT_SITES,
) -> ReportUpload:
    """Check a whole metadata mapping; raise :class:`ContractError` on the first problem.

    Fields are checked in a fixed order (project, graceid, uploader, revision,
    subdir, filename, kind, sha256) so the same bad input always names the
    same field.
    """
    return ReportUpload(
        project=validate_project(_required(metadata, KEY_PROJECT), projects),
        graceid=validate_graceid(_required(metadata, KEY_GRACEID)),
        site=validate_site(_required(metadata, KEY_UPLOADER), sites),
        revision=validate_revision(_required(metadata, KEY_REVISION)),
        subdir=validate_subdir(metadata.get(KEY_SUBDIR)),
        filename=validate_filename(_required(metadata, KEY_FILENAME)),
        kind=validate_kind(_required(metadata, KEY_KIND)),
        sha256=validate_sha256(metadata.get(KEY_SHA256)),
    )


def event_dirname(graceid: str) -> str:
    """``<graceid>_dir``: the directory holding every report of one event."""
    return f"{validate_graceid(graceid)}_dir"


def report_dirname(graceid: str, site: str, revision: int) -> str:
    """``<graceid>_<site>_<revision>``: the directory of one report."""
    return f"{validate_graceid(graceid)}_{site}_{validate_revision(revision)}"


def report_relpath(graceid: str, site: str, revision: int) -> str:
    return f"{event_dirname(graceid)}/{report_dirname(graceid, site, revision)}"


_REPORT_DIR_RE = re.compile(r"(?P<graceid>.+)_(?P<site>[A-Za-z]+)_(?P<revision>\d+)", re.ASCII)


def parse_report_dirname(name: str, sites: Iterable[str] = DEFAULT_SITES) -> tuple[str, str, int]:
    """Split ``<graceid>_<site>_<revision>`` back into its parts, validating each."""
    match = _REPORT_DIR_RE.fullmatch(name)
    if not match:
        raise ContractError("report directory", "must be named <graceid>_<site>_<revision>", name)
    return (
        validate_graceid(match["graceid"]),
        validate_site(match["site"], sites),
        validate_revision(match["revision"]),
    )
