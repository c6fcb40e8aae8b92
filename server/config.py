"""Server settings: one object built once from a TOML file, the command line
and the embedded defaults.

With no config file the server runs the *embedded default*: everything under
one data directory (SQLite database, uploads, report tree), the four projects
and four sites, reports served by the app itself, no authentication.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqrxfer import contract

from .auth.settings import AuthSettings, load_auth_settings
from .configkeys import (
    BOOLEAN,
    TABLE,
    Check,
    ConfigError,
    Invalid,
    integer,
    key,
    list_of,
    network,
    path,
    read_table,
    seconds,
    text,
    with_defaults,
)
from .tus.fsyncpolicy import FSYNC_COMPLETE, FSYNC_NEVER, FSYNC_POLICIES, fsync_policy
from .tus.keepalive import DEFAULT_DEAD_HOST_TIMEOUT, MIN_DEAD_HOST_TIMEOUT

__all__ = ["ConfigError", "ProjectConfig", "Settings", "load_settings"]

DEFAULT_DATA_DIR = "./dqrxfer-data"
DEFAULT_MAX_UPLOAD_SIZE = 64 * 1024**3
DEFAULT_MIN_FREE_SPACE = 1024**3
DEFAULT_UPLOAD_EXPIRY = 7 * 24 * 3600
#: ``max_unfinished_bytes`` defaults to this many times the largest project's
#: ``max_upload_size``: a few of the largest uploads in progress at once.
UNFINISHED_BYTES_FACTOR = 4

#: The database systems the server runs on (SQLAlchemy backend names).
DATABASE_BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class TarLimits:
    """What one archive may contain (per project: ``tar_max_*``; enforced by
    :mod:`.reports.archive`)."""

    max_members: int = 50_000
    max_bytes: int = 64 * 1024**3
    max_ratio: int = 200


_TAR = TarLimits()


# -- what values may be ------------------------------------------------------------


def _hide_password(value: object) -> str:
    """A database URL as a message may show it: without its password."""
    if not isinstance(value, str):
        return repr(value)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return repr(make_url(value).render_as_string(hide_password=True))
    except (ArgumentError, ValueError):
        return repr(re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", value))


def _database_url(value: object) -> str:
    """A URL SQLAlchemy parses, of a supported database whose driver is installed.

    SQLAlchemy is imported here, where a file sets ``database_url``: a
    command that stops at another key's mistake, or runs on the default
    URL, starts without it (a quarter of a second)."""
    if not isinstance(value, str) or not value:
        raise Invalid()
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise Invalid("not a URL SQLAlchemy can read") from None
    if url.get_backend_name() not in DATABASE_BACKENDS:
        raise Invalid(f"unknown database {url.get_backend_name()!r}")
    try:
        dialect = url.get_dialect()
        dialect.import_dbapi()
    except NoSuchModuleError:
        raise Invalid(f"SQLAlchemy has no driver {url.drivername!r}") from None
    except ImportError as error:
        raise Invalid(
            f"the driver of {url.drivername!r} is not installed ({error.name or error}); "
            "PostgreSQL: postgresql+psycopg://..."
        ) from None
    return value


DATABASE_URL = Check(
    f"an SQLAlchemy URL of a {' or '.join(DATABASE_BACKENDS)} database "
    "(sqlite:////path/dqrxfer.sqlite, postgresql+psycopg://user@host/db)",
    _database_url,
    show=_hide_password,
)
SIZE = integer(minimum=1, unit="bytes")
_LETTERS = text(pattern=r"[A-Za-z]+")


def _site(value: object) -> str:
    return _LETTERS.convert(value).lower()


#: A site name: letters only (report directories are <graceid>_<site>_<revision>).
SITE = Check("a site name (letters only)", _site)
SITES = list_of(SITE, "a list of site names", minimum=1)
_URL_RE = r"https?://[^\s/]+(/\S*)?|/\S*"
_ORIGIN_RE = re.compile(r"https?://[^/?#\s]+")


def _origin(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid()
    origin = value.rstrip("/")
    if origin == "*":
        return origin
    if not _ORIGIN_RE.fullmatch(origin):
        raise Invalid()
    return origin.lower()


ORIGIN = Check("an origin such as https://host.example:8443, or *", _origin)


def _fsync(value: object) -> str:
    if not isinstance(value, str | bool):
        raise Invalid()
    try:
        return fsync_policy(value)
    except ValueError:
        raise Invalid() from None


FSYNC = Check(
    f"one of {', '.join(FSYNC_POLICIES)} (or true, false: the older spelling of always, never)",
    _fsync,
)


@dataclass(frozen=True)
class ProjectConfig:
    """Where one project's reports live, how they are reached, what they may hold:
    one ``[projects.<name>]`` table (its keys are the fields declared with ``key``;
    absent ones inherit the top-level value).

    ``staging_dir`` is where archives are extracted before they are published;
    it must be on the same filesystem as ``reports_root`` (publication renames
    into the tree) and defaults to ``<reports_root>/.dqrxfer-staging``.
    """

    name: str
    reports_root: Path = key(path(absolute=True), required=True)
    url: str = key(
        text("an http(s) URL or a path starting with '/'", pattern=_URL_RE), required=True
    )
    sites: tuple[str, ...] = key(SITES, contract.DEFAULT_SITES)
    max_upload_size: int = key(SIZE, DEFAULT_MAX_UPLOAD_SIZE)
    staging_dir: Path | None = key(path(absolute=True), None)
    tar_max_members: int = key(integer(minimum=1, unit="members"), _TAR.max_members)
    tar_max_bytes: int = key(SIZE, _TAR.max_bytes)
    tar_max_ratio: int = key(integer(minimum=1), _TAR.max_ratio)

    @property
    def staging(self) -> Path:
        return self.staging_dir or self.reports_root / ".dqrxfer-staging"

    @property
    def tar(self) -> TarLimits:
        return TarLimits(self.tar_max_members, self.tar_max_bytes, self.tar_max_ratio)

    def report_url(self, relpath: str) -> str:
        base = self.url if self.url.endswith("/") else self.url + "/"
        return f"{base}{relpath}/"


#: Keys a project inherits from the top level when its table does not set them.
INHERITED_KEYS = ("sites", "max_upload_size", "tar_max_members", "tar_max_bytes", "tar_max_ratio")


@dataclass(frozen=True)
class Settings:
    """The server's settings.  The fields declared with ``key`` are the keys of
    the file's top level: adding a key is adding one such field (its check and
    default); :func:`load_settings` then reads, checks and refuses it like the
    others.  Fields without a default are filled in by :func:`load_settings`
    (from ``data_dir`` and the embedded default) when the file lacks them."""

    data_dir: Path = key(path())
    database_url: str = key(DATABASE_URL)
    uploads_dir: Path = key(path())
    projects: dict[str, ProjectConfig] = key(TABLE)
    sites: tuple[str, ...] = key(SITES)
    # Bytes the unfinished uploads of one principal may hold (tus
    # ``TusOptions.max_unfinished_bytes``): declared lengths, or the bytes
    # received while a length is deferred.  Default: UNFINISHED_BYTES_FACTOR
    # times the largest project's max_upload_size.
    max_unfinished_bytes: int = key(SIZE)
    max_upload_size: int = key(SIZE, DEFAULT_MAX_UPLOAD_SIZE)
    # Without a config file (the embedded default) both are true.
    serve_reports: bool = key(BOOLEAN, False)
    auto_upgrade: bool = key(BOOLEAN, False)
    auth: AuthSettings = key(TABLE, default_factory=AuthSettings)
    # Seconds a second writer waits for an upload's lock (0: try once).
    lock_timeout: float = key(seconds(), 10.0)
    # PostgreSQL only: seconds within which the database drops the session of
    # a host that stopped answering (power or network lost), releasing the
    # upload locks it held (TCP keepalives, server/tus/pglocker.py).
    lock_dead_host_timeout: int = key(
        integer(minimum=MIN_DEAD_HOST_TIMEOUT, unit="seconds"), DEFAULT_DEAD_HOST_TIMEOUT
    )
    # fsync policy of uploads and publication: "complete", "always" or "never"
    # (server/tus/store.py; true/false are read as always/never).
    fsync: str = key(FSYNC, FSYNC_COMPLETE)
    # /healthz fails below this many free bytes (0: never).
    min_free_space: int = key(integer(minimum=0, unit="bytes"), DEFAULT_MIN_FREE_SPACE)
    # tus endpoint (docs/tus.md).  upload_expiry: seconds after its last change
    # that an unfinished upload expires and ``dqrxfer-server cleanup`` may remove
    # it (0: never).  read_timeout: seconds a request body may stall before the
    # request ends, keeping its bytes and releasing the upload's lock.
    # trusted_proxies: addresses/networks of reverse proxies whose
    # X-Forwarded-Proto/-Host/-Port/-Prefix headers build the URLs the server
    # hands out (tus Location); from anyone else these headers are ignored.
    # Unset: the proxies trusted by [auth] (the authenticating front end).
    # metrics: serve /metrics (Prometheus).
    upload_expiry: float = key(seconds(), DEFAULT_UPLOAD_EXPIRY)
    # Seconds a finished upload's data and state stay in uploads_dir after its
    # last byte (its files are published in the report tree), so that a client
    # that lost the last answer can still ask; then ``cleanup`` removes them.
    finished_upload_retention: float = key(seconds(), DEFAULT_UPLOAD_EXPIRY)
    read_timeout: float = key(seconds(positive=True), 60.0)
    # A request for an upload whose lock is held by a request body that has
    # been silent for half a second asks it to let go (its bytes kept), as
    # tusd does; false: it waits for read_timeout (docs/tus.md).
    lock_take_over: bool = key(BOOLEAN, True)
    # Seconds a new connection of ``serve`` may take to send its request line
    # and headers (server/worker.py): a client that connects and sends
    # nothing holds no capacity for longer.
    header_timeout: float = key(seconds(positive=True), 10.0)
    trusted_proxies: tuple[str, ...] | None = key(
        list_of(network(), "a list of IP addresses or networks"), None
    )
    metrics: bool = key(BOOLEAN, True)
    # Defaults of every project's archive limits (docs/reports.md).
    tar_max_members: int = key(integer(minimum=1, unit="members"), _TAR.max_members)
    tar_max_bytes: int = key(SIZE, _TAR.max_bytes)
    tar_max_ratio: int = key(integer(minimum=1), _TAR.max_ratio)
    #: Origins (``https://host[:port]``, or ``*``) whose pages may call this
    #: server from a browser (CORS); empty: none.
    cors_origins: tuple[str, ...] = key(list_of(ORIGIN, "a list of origins"), ())
    source: str = "embedded default"

    @property
    def auth_mode(self) -> str:
        return self.auth.mode

    @property
    def durable(self) -> bool:
        """Whether what is published is fsynced (every ``fsync`` policy but ``never``)."""
        return self.fsync != FSYNC_NEVER

    @property
    def forwarded_proxies(self) -> tuple[str, ...]:
        """Whose X-Forwarded-* headers to honour (see ``trusted_proxies``)."""
        if self.trusted_proxies is not None:
            return self.trusted_proxies
        return tuple(str(network) for network in self.auth.trusted_proxies)


def read_config_file(config_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML file ``config_path`` as a table."""
    try:
        with open(config_path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ConfigError(
            f"cannot read config file {config_path}: {error.strerror or error}"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {config_path} is not valid TOML: {error}") from None


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Settings:
    """Build the settings from ``config_path`` (or ``DQRXFER_CONFIG``) and ``data_dir``.

    ``data_dir`` given on the command line overrides the file's ``data_dir``.
    Every key is checked here, once: any bad one is a :class:`ConfigError`
    naming it, its value and what is allowed.
    """
    config_path = config_path or os.environ.get("DQRXFER_CONFIG") or None
    table = read_config_file(config_path) if config_path is not None else {}
    values = read_table(Settings, table, "")
    embedded = config_path is None
    root = Path(data_dir) if data_dir else values.get("data_dir", Path(DEFAULT_DATA_DIR))
    root = root.resolve()
    values["data_dir"] = root
    values.setdefault("database_url", f"sqlite:///{root / 'dqrxfer.sqlite'}")
    values.setdefault("uploads_dir", root / "uploads")
    values.setdefault("sites", contract.DEFAULT_SITES)
    values.setdefault("serve_reports", embedded)
    values.setdefault("auto_upgrade", embedded)
    if "trusted_proxies" in values:
        values["trusted_proxies"] = tuple(str(net) for net in values["trusted_proxies"])
    values = with_defaults(Settings, values)
    values["projects"] = _load_projects(values.get("projects"), root, values)
    values.setdefault(
        "max_unfinished_bytes",
        UNFINISHED_BYTES_FACTOR
        * max(project.max_upload_size for project in values["projects"].values()),
    )
    values["auth"] = load_auth_settings(
        table.get("auth"), root, list(values["projects"]), values["sites"]
    )
    return Settings(**values, source=str(config_path) if config_path else "embedded default")


_PROJECT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _load_projects(
    table: dict[str, Any] | None, root: Path, top: dict[str, Any]
) -> dict[str, ProjectConfig]:
    """The ``[projects.<name>]`` tables; without any, the four default projects
    under ``<data_dir>/reports/<name>``, served by the app at ``/reports/<name>/``."""
    inherited = {name: top[name] for name in INHERITED_KEYS}
    if not table:
        return {
            name: ProjectConfig(
                name=name,
                reports_root=root / "reports" / name,
                url=f"/reports/{name}/",
                **inherited,
            )
            for name in contract.DEFAULT_PROJECTS
        }
    projects: dict[str, ProjectConfig] = {}
    for name, entry in table.items():
        if not _PROJECT_NAME_RE.fullmatch(name):
            raise ConfigError(
                f"projects.{name}: project names are letters, digits, '_', '.' and '-' "
                "(at most 64, starting with a letter or digit)"
            )
        if name.lower() in {known.lower() for known in projects}:
            raise ConfigError(f"projects.{name}: another project differs only in case")
        where = f"projects.{name}."
        values = {**inherited, **read_table(ProjectConfig, TABLE(entry, f"projects.{name}"), where)}
        stray = sorted(set(values["sites"]) - set(top["sites"]))
        if stray:
            raise ConfigError(f"{where}sites: {', '.join(stray)} not among the configured sites")
        projects[name] = ProjectConfig(name=name, **values)
    return projects
