"""Server settings: one object built once from a TOML file, the command line
and the embedded defaults.

With no config file the server runs the *embedded default*: everything under
one data directory (SQLite database, uploads, report tree), the four projects
and four sites, reports served by the app itself, no authentication.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dqrxfer import contract

from .auth.settings import AuthConfigError, AuthSettings, load_auth_settings
from .reports.archive import TarLimits
from .tus.store import FSYNC_COMPLETE, FSYNC_POLICIES, fsync_policy

DEFAULT_DATA_DIR = "./dqrxfer-data"
DEFAULT_MAX_UPLOAD_SIZE = 64 * 1024**3
DEFAULT_MIN_FREE_SPACE = 1024**3
DEFAULT_UPLOAD_EXPIRY = 7 * 24 * 3600
#: ``max_unfinished_bytes`` defaults to this many times the largest project's
#: ``max_upload_size``: a few of the largest uploads in progress at once.
UNFINISHED_BYTES_FACTOR = 4


class ConfigError(ValueError):
    """The configuration file is unreadable or has a bad key; the message names it."""


@dataclass(frozen=True)
class ProjectConfig:
    """Where one project's reports live, how they are reached, what they may hold.

    ``staging_dir`` is where archives are extracted before they are published;
    it must be on the same filesystem as ``reports_root`` (publication renames
    into the tree) and defaults to ``<reports_root>/.dqrxfer-staging``.
    """

    name: str
    reports_root: Path
    url: str
    sites: tuple[str, ...]
    max_upload_size: int
    staging_dir: Path | None = None
    tar: TarLimits = field(default_factory=TarLimits)

    @property
    def staging(self) -> Path:
        return self.staging_dir or self.reports_root / ".dqrxfer-staging"

    def report_url(self, relpath: str) -> str:
        base = self.url if self.url.endswith("/") else self.url + "/"
        return f"{base}{relpath}/"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    uploads_dir: Path
    projects: dict[str, ProjectConfig]
    sites: tuple[str, ...]
    max_upload_size: int = DEFAULT_MAX_UPLOAD_SIZE
    serve_reports: bool = True
    auto_upgrade: bool = False
    auth: AuthSettings = field(default_factory=AuthSettings)
    lock_timeout: float = 10.0
    # fsync policy of uploads and publication: "complete", "always" or "never"
    # (server/tus/store.py; true/false are read as always/never).
    fsync: str = "complete"
    min_free_space: int = DEFAULT_MIN_FREE_SPACE
    # tus endpoint (docs/tus.md).  upload_expiry: seconds after its last change
    # that an unfinished upload expires and ``dqrxfer-server cleanup`` may remove
    # it (0: never).  read_timeout: seconds a request body may stall before the
    # request ends, keeping its bytes and releasing the upload's lock.
    # trusted_proxies: addresses/networks of reverse proxies whose
    # X-Forwarded-Proto/-Host/-Port/-Prefix headers build the URLs the server
    # hands out (tus Location); from anyone else these headers are ignored.
    # Unset: the proxies trusted by [auth] (the authenticating front end).
    # metrics: serve /metrics (Prometheus).
    upload_expiry: float = DEFAULT_UPLOAD_EXPIRY
    # Seconds a finished upload's data and state stay in uploads_dir after its
    # last byte (its files are published in the report tree), so that a client
    # that lost the last answer can still ask; then ``cleanup`` removes them.
    finished_upload_retention: float = DEFAULT_UPLOAD_EXPIRY
    read_timeout: float = 60.0
    trusted_proxies: tuple[str, ...] | None = None
    metrics: bool = True
    # Bytes the unfinished uploads of one principal may hold (tus
    # ``TusOptions.max_unfinished_bytes``): declared lengths, or the bytes
    # received while a length is deferred.
    max_unfinished_bytes: int = UNFINISHED_BYTES_FACTOR * DEFAULT_MAX_UPLOAD_SIZE
    source: str = "embedded default"
    #: Origins (``https://host[:port]``, or ``*``) whose pages may call this
    #: server from a browser (CORS); empty: none.
    cors_origins: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def auth_mode(self) -> str:
        return self.auth.mode

    @property
    def forwarded_proxies(self) -> tuple[str, ...]:
        """Whose X-Forwarded-* headers to honour (see ``trusted_proxies``)."""
        if self.trusted_proxies is not None:
            return self.trusted_proxies
        return tuple(str(network) for network in self.auth.trusted_proxies)


def _expect(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = table[key]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ConfigError(f"{where}{key}: must be {kind.__name__} (got {value!r})")
    return value


def _number(table: dict[str, Any], key: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{key}: must be a non-negative number of seconds (got {value!r})")
    return float(value)


def _strings(table: dict[str, Any], key: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{key}: must be a list of strings (got {value!r})")
    return tuple(value)


def _trusted_proxies(table: dict[str, Any]) -> tuple[str, ...] | None:
    if "trusted_proxies" not in table:
        return None
    proxies = _strings(table, "trusted_proxies")
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"trusted_proxies: {proxy!r} is not an IP address or network"
            ) from None
    return proxies


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Settings:
    """Build the settings from ``config_path`` (or ``DQRXFER_CONFIG``) and ``data_dir``.

    ``data_dir`` given on the command line overrides the file's ``data_dir``.
    """
    config_path = config_path or os.environ.get("DQRXFER_CONFIG") or None
    table: dict[str, Any] = {}
    source = "embedded default"
    if config_path is not None:
        try:
            with open(config_path, "rb") as handle:
                table = tomllib.load(handle)
        except OSError as error:
            raise ConfigError(f"cannot read config file {config_path}: {error}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {config_path} is not valid TOML: {error}") from None
        source = str(config_path)

    known = {
        "data_dir",
        "database_url",
        "uploads_dir",
        "max_upload_size",
        "sites",
        "serve_reports",
        "auto_upgrade",
        "lock_timeout",
        "fsync",
        "upload_expiry",
        "finished_upload_retention",
        "read_timeout",
        "trusted_proxies",
        "metrics",
        "projects",
        "auth",
        "cors_origins",
        "min_free_space",
        "max_unfinished_bytes",
        *TAR_LIMIT_KEYS,
    }
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown configuration key(s): {', '.join(unknown)}")

    root = Path(data_dir or table.get("data_dir") or DEFAULT_DATA_DIR).resolve()
    database_url = table.get("database_url") or f"sqlite:///{root / 'dqrxfer.sqlite'}"
    uploads_dir = Path(table.get("uploads_dir") or root / "uploads")
    max_size = (
        _expect(table, "max_upload_size", int, "")
        if "max_upload_size" in table
        else DEFAULT_MAX_UPLOAD_SIZE
    )
    sites = tuple(site.lower() for site in (table.get("sites") or contract.DEFAULT_SITES))
    tar = _load_tar_limits(table, "", TarLimits())
    projects = _load_projects(table.get("projects"), root, sites, max_size, tar)
    try:
        auth = load_auth_settings(table.get("auth"), root, list(projects), sites)
    except AuthConfigError as error:
        raise ConfigError(str(error)) from None
    return Settings(
        data_dir=root,
        database_url=database_url,
        uploads_dir=uploads_dir,
        projects=projects,
        sites=sites,
        max_upload_size=max_size,
        serve_reports=bool(table.get("serve_reports", config_path is None)),
        auto_upgrade=bool(table.get("auto_upgrade", config_path is None)),
        auth=auth,
        lock_timeout=float(table.get("lock_timeout", 10.0)),
        fsync=_fsync_policy(table.get("fsync", FSYNC_COMPLETE)),
        min_free_space=(
            _expect(table, "min_free_space", int, "")
            if "min_free_space" in table
            else DEFAULT_MIN_FREE_SPACE
        ),
        upload_expiry=_number(table, "upload_expiry", DEFAULT_UPLOAD_EXPIRY),
        finished_upload_retention=_number(
            table, "finished_upload_retention", DEFAULT_UPLOAD_EXPIRY
        ),
        read_timeout=_number(table, "read_timeout", 60.0),
        trusted_proxies=_trusted_proxies(table),
        metrics=bool(table.get("metrics", True)),
        max_unfinished_bytes=_positive_int(
            table,
            "max_unfinished_bytes",
            "",
            UNFINISHED_BYTES_FACTOR * max(project.max_upload_size for project in projects.values()),
        ),
        source=source,
        cors_origins=_load_cors_origins(table.get("cors_origins")),
    )


_ORIGIN_RE = re.compile(r"https?://[^/?#\s]+")


def _load_cors_origins(value: Any) -> tuple[str, ...]:
    """``cors_origins``: a list of ``scheme://host[:port]`` origins, or ``["*"]``."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"cors_origins: must be a list of strings (got {value!r})")
    origins = []
    for item in value:
        origin = item.rstrip("/")
        if origin != "*" and not _ORIGIN_RE.fullmatch(origin):
            raise ConfigError(
                f"cors_origins: {item!r} is not an origin such as https://host.example:8443 or *"
            )
        origins.append(origin if origin == "*" else origin.lower())
    return tuple(origins)


#: Keys of the archive limits, at the top level (defaults) and in each project.
TAR_LIMIT_KEYS = ("tar_max_members", "tar_max_bytes", "tar_max_ratio")
#: Keys of one ``[projects.<name>]`` table.
PROJECT_KEYS = {"reports_root", "url", "sites", "staging_dir", "max_upload_size", *TAR_LIMIT_KEYS}
_PROJECT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_URL_RE = re.compile(r"https?://[^\s/]+(/\S*)?|/\S*")


def _positive_int(table: dict[str, Any], key: str, where: str, default: int) -> int:
    if key not in table:
        return default
    value = _expect(table, key, int, where)
    if value <= 0:
        raise ConfigError(f"{where}{key}: must be a positive integer (got {value!r})")
    return value


def _fsync_policy(value: object) -> str:
    if not isinstance(value, (str, bool)):
        raise ConfigError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {value!r}")
    try:
        return fsync_policy(value)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _load_tar_limits(table: dict[str, Any], where: str, defaults: TarLimits) -> TarLimits:
    return TarLimits(
        max_members=_positive_int(table, "tar_max_members", where, defaults.max_members),
        max_bytes=_positive_int(table, "tar_max_bytes", where, defaults.max_bytes),
        max_ratio=_positive_int(table, "tar_max_ratio", where, defaults.max_ratio),
    )


def _absolute_path(table: dict[str, Any], key: str, where: str) -> Path:
    path = Path(_expect(table, key, str, where))
    if not path.is_absolute():
        raise ConfigError(f"{where}{key}: must be an absolute path (got {str(path)!r})")
    return path


def _site_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{where}sites: must be a list of site names (got {value!r})")
    return tuple(site.lower() for site in value)


def _load_projects(
    table: dict[str, Any] | None,
    root: Path,
    sites: tuple[str, ...],
    max_size: int,
    tar: TarLimits,
) -> dict[str, ProjectConfig]:
    """The ``[projects.<name>]`` tables; without any, the four default projects
    under ``<data_dir>/reports/<name>``, served by the app at ``/reports/<name>/``."""
    if not table:
        return {
            name: ProjectConfig(
                name=name,
                reports_root=root / "reports" / name,
                url=f"/reports/{name}/",
                sites=sites,
                max_upload_size=max_size,
                tar=tar,
            )
            for name in contract.DEFAULT_PROJECTS
        }
    if not isinstance(table, dict):
        raise ConfigError("projects: must be a table of [projects.<name>] tables")
    projects: dict[str, ProjectConfig] = {}
    for name, entry in table.items():
        where = f"projects.{name}."
        if not _PROJECT_NAME_RE.fullmatch(name):
            raise ConfigError(
                f"projects.{name}: project names are letters, digits, '_', '.' and '-' "
                "(at most 64, starting with a letter or digit)"
            )
        if name.lower() in {known.lower() for known in projects}:
            raise ConfigError(f"projects.{name}: another project differs only in case")
        if not isinstance(entry, dict):
            raise ConfigError(f"projects.{name}: must be a table")
        unknown = sorted(set(entry) - PROJECT_KEYS)
        if unknown:
            raise ConfigError(
                f"{where}{unknown[0]}: unknown key (known: {', '.join(sorted(PROJECT_KEYS))})"
            )
        for key in ("reports_root", "url"):
            if key not in entry:
                raise ConfigError(f"{where}{key}: is required")
        url = _expect(entry, "url", str, where)
        if not _URL_RE.fullmatch(url):
            raise ConfigError(
                f"{where}url: must be an http(s) URL or a path starting with '/' (got {url!r})"
            )
        project_sites = _site_list(entry["sites"], where) if "sites" in entry else sites
        stray = sorted(set(project_sites) - set(sites))
        if stray:
            raise ConfigError(f"{where}sites: {', '.join(stray)} not among the configured sites")
        projects[name] = ProjectConfig(
            name=name,
            reports_root=_absolute_path(entry, "reports_root", where),
            url=url,
            sites=project_sites,
            max_upload_size=_positive_int(entry, "max_upload_size", where, max_size),
            staging_dir=(
                _absolute_path(entry, "staging_dir", where) if "staging_dir" in entry else None
            ),
            tar=_load_tar_limits(entry, where, tar),
        )
    return projects
