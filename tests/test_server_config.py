"""Every key of the server configuration is typed and checked once, at load.

A wrong value stops the real ``dqrxfer-server`` (every command that reads
the configuration) with exit status 2 and one line on standard error that
names the key with its table, the value and what is allowed: never a
traceback, never a secret.  ``serve`` runs as a process; the other
commands' ``main`` in the test's process (``run_in_process``, held to what
the process gives by ``tests/test_cli_in_process.py``), and as processes in
the import test below.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dqrxfer.server.auth.settings import AuthSettings, RuleTable
from dqrxfer.server.config import ProjectConfig, Settings, load_settings
from dqrxfer.server.configkeys import (
    ConfigError,
    declared_keys,
    integer,
    key,
    read_table,
    with_defaults,
)
from support.cli import run_cli, run_in_process

PROJECT = '[projects.O4]\nreports_root = "/srv/r"\nurl = "/r/"\n'
RULE = '[[auth.rules]]\nprincipals = ["*@LIGO.ORG"]\n'

#: (file, the message's start, the value as the message shows it)
BAD_VALUES = [
    # -- top level
    ("data_dir = 5", "data_dir: must be a path", "(got 5)"),
    ('data_dir = ""', "data_dir: must be a path", "(got '')"),
    ('database_url = "nonsense://x"', "database_url: must be an SQLAlchemy URL", "'nonsense://x'"),
    ('database_url = "mysql://u:pw@h/db"', "database_url: must be", "unknown database 'mysql'"),
    ('database_url = "postgresql+nope://h/db"', "database_url: must be", "has no driver"),
    ('database_url = "not a url"', "database_url: must be", "'not a url'"),
    ("database_url = 5", "database_url: must be", "(got 5)"),
    ("uploads_dir = []", "uploads_dir: must be a path", "(got [])"),
    ("max_upload_size = -5", "max_upload_size: must be a positive whole number of bytes", "-5"),
    ("max_upload_size = 0", "max_upload_size: must be a positive", "(got 0)"),
    ('max_upload_size = "1GB"', "max_upload_size: must be", "(got '1GB')"),
    ("max_upload_size = 1.5", "max_upload_size: must be", "(got 1.5)"),
    ("max_unfinished_bytes = 0", "max_unfinished_bytes: must be a positive", "(got 0)"),
    ("max_unfinished_bytes = true", "max_unfinished_bytes: must be", "(got True)"),
    ("sites = [1]", "sites[0]: must be a site name", "(got 1)"),
    ('sites = ["l-o"]', "sites[0]: must be a site name (letters only)", "'l-o'"),
    ("sites = []", "sites: must be a list of site names", "(got [])"),
    ('sites = "llo"', "sites: must be a list of site names", "(got 'llo')"),
    ('serve_reports = "false"', "serve_reports: must be true or false", "(got 'false')"),
    ("serve_reports = 0", "serve_reports: must be true or false", "(got 0)"),
    ('auto_upgrade = "yes"', "auto_upgrade: must be true or false", "(got 'yes')"),
    ('lock_timeout = "abc"', "lock_timeout: must be a number of seconds", "(got 'abc')"),
    ("lock_timeout = -1", "lock_timeout: must be a number of seconds, at least 0", "(got -1)"),
    ("lock_timeout = inf", "lock_timeout: must be a number of seconds", "(got inf)"),
    (
        "lock_dead_host_timeout = 2",
        "lock_dead_host_timeout: must be a whole number of seconds, at least 4",
        "(got 2)",
    ),
    ('fsync = "sometimes"', "fsync: must be one of always, complete, never", "'sometimes'"),
    ("fsync = 3", "fsync: must be one of", "(got 3)"),
    ("upload_expiry = -1", "upload_expiry: must be a number of seconds", "(got -1)"),
    ("upload_expiry = nan", "upload_expiry: must be a number of seconds", "(got nan)"),
    ('finished_upload_retention = "7d"', "finished_upload_retention: must be", "'7d'"),
    ("read_timeout = 0", "read_timeout: must be a number of seconds greater than 0", "(got 0)"),
    (
        "header_timeout = -1",
        "header_timeout: must be a number of seconds greater than 0",
        "(got -1)",
    ),
    ('trusted_proxies = ["proxy"]', "trusted_proxies[0]: must be an IP address", "'proxy'"),
    ('trusted_proxies = "10.0.0.1"', "trusted_proxies: must be a list", "'10.0.0.1'"),
    ('metrics = "true"', "metrics: must be true or false", "(got 'true')"),
    ("lock_take_over = 1", "lock_take_over: must be true or false", "(got 1)"),
    ("min_free_space = -1", "min_free_space: must be a whole number of bytes, at least 0", "-1"),
    ("tar_max_members = 0", "tar_max_members: must be a positive whole number", "(got 0)"),
    ("tar_max_bytes = -1", "tar_max_bytes: must be a positive whole number of bytes", "-1"),
    ('tar_max_ratio = "x"', "tar_max_ratio: must be a positive whole number", "(got 'x')"),
    ('cors_origins = ["ftp://x"]', "cors_origins[0]: must be an origin", "'ftp://x'"),
    ("cors_origins = 1", "cors_origins: must be a list of origins", "(got 1)"),
    ("auth = 5", "auth: must be a table", "(got 5)"),
    ("projects = 5", "projects: must be a table", "(got 5)"),
    ("serve_report = false", "serve_report: unknown key; did you mean serve_reports?", "known:"),
    # -- [projects.<name>]
    ("[projects.O4]\nreports_root = 5\nurl = '/r/'", "projects.O4.reports_root: must be", "5"),
    (
        '[projects.O4]\nreports_root = "r"\nurl = "/r/"',
        "projects.O4.reports_root: must be an abs",
        "",
    ),
    ('[projects.O4]\nreports_root = "/r"\nurl = "ftp://x"', "projects.O4.url: must be an http", ""),
    ('[projects.O4]\nreports_root = "/r"', "projects.O4.url: is required", ""),
    (PROJECT + 'sites = ["geo"]', "projects.O4.sites: geo not among the configured sites", ""),
    (PROJECT + "sites = [true]", "projects.O4.sites[0]: must be a site name", "(got True)"),
    (PROJECT + "max_upload_size = -5", "projects.O4.max_upload_size: must be a positive", "-5"),
    (PROJECT + 'staging_dir = "tmp"', "projects.O4.staging_dir: must be an absolute path", "'tmp'"),
    (PROJECT + "tar_max_members = 0", "projects.O4.tar_max_members: must be a positive", "0"),
    (PROJECT + "tar_max_bytes = true", "projects.O4.tar_max_bytes: must be", "(got True)"),
    (PROJECT + "tar_max_ratio = -1", "projects.O4.tar_max_ratio: must be a positive", "(got -1)"),
    (PROJECT + "root = 1", "projects.O4.root: unknown key", "known:"),
    ("[projects]\nO4 = 1", "projects.O4: must be a table", "(got 1)"),
    # -- [auth]
    (
        '[auth]\nmode = "kerberos"',
        "auth.mode: must be one of none, gssapi, remote-user",
        "'kerberos'",
    ),
    ("[auth]\nkeytab = 5", "auth.keytab: must be a path", "(got 5)"),
    ('[auth]\nservice_principal = ""', "auth.service_principal: must be a non-empty", "''"),
    ('[auth]\ntrusted_proxies = ["x"]', "auth.trusted_proxies[0]: must be an IP address", "'x'"),
    ("[auth]\nremote_user_header = 5", "auth.remote_user_header: must be a string", "(got 5)"),
    ("[auth]\nsession_lifetime = -1", "auth.session_lifetime: must be a whole number", "-1"),
    ("[auth]\nsession_lifetime = true", "auth.session_lifetime: must be", "(got True)"),
    (
        '[auth]\nsession_secret = "short"',
        "auth.session_secret: must be a string of at",
        "of 5 char",
    ),
    ("[auth]\nsession_secret_file = 5", "auth.session_secret_file: must be a path", "5"),
    ('[auth]\ncookie_name = "a b"', "auth.cookie_name: must be letters, digits", "'a b'"),
    ('[auth]\ncookie_secure = "yes"', 'auth.cookie_secure: must be true, false or "auto"', "yes"),
    ('[auth]\npublic_read = "false"', "auth.public_read: must be true or false", "'false'"),
    ("[auth]\nrules = {}", "auth.rules: must be an array of tables", "(got {})"),
    ("[auth]\nrules = [1]", "auth.rules[0]: must be a table", "(got 1)"),
    ('[[auth.rules]]\nprojects = ["O4"]', "auth.rules[0].principals: is required", ""),
    ("[[auth.rules]]\nprincipals = [7]", "auth.rules[0].principals[0]: must be a non-empty", "7"),
    (RULE + "name = 5", "auth.rules[0].name: must be a non-empty string", "(got 5)"),
    (RULE + "projects = [true]", "auth.rules[0].projects[0]: must be a non-empty", "True"),
    (RULE + "sites = [3]", "auth.rules[0].sites[0]: must be a non-empty string", "(got 3)"),
    (RULE + 'sites = ["cit"]', "auth.rules[0].sites: 'cit' is not configured", ""),
    (RULE + "who = 1", "auth.rules[0].who: unknown key", "known:"),
    ("[auth]\ncolour = 1", "auth.colour: unknown key", "known:"),
]

#: Every command that reads the configuration, in turn.
COMMANDS = [["serve"], ["db", "upgrade"], ["cleanup"], ["reports", "list"], ["reindex"]]


@pytest.mark.parametrize(
    ("index", "content", "message", "value"),
    [(index, *case) for index, case in enumerate(BAD_VALUES)],
    ids=[case[0].replace("\n", " ") for case in BAD_VALUES],
)
def test_a_bad_value_is_one_line_naming_the_key_and_exit_2(
    tmp_path: Path, index: int, content: str, message: str, value: str
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(content + "\n")
    command = COMMANDS[index % len(COMMANDS)]
    data_dir = tmp_path / "data"
    run = run_cli if command == ["serve"] else run_in_process  # serve only as a process
    result = run("dqrxfer-server", *command, "--config", str(config), "--data-dir", str(data_dir))
    assert result.returncode == 2, (command, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"dqrxfer-server: configuration error: {message}"), lines[0]
    assert value in lines[0]
    assert result.stdout == ""
    assert not data_dir.exists()  # nothing was made before the refusal


def test_every_key_has_a_bad_value_above() -> None:
    tried = {line.split(" =")[0] for case in BAD_VALUES for line in case[0].splitlines()}
    for table in (Settings, ProjectConfig, AuthSettings, RuleTable):
        for name in declared_keys(table):
            assert name in tried, f"{table.__name__}.{name}"


def test_secrets_are_not_shown(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    for content, secret in (
        ('[auth]\nsession_secret = "hunter2-but-short"', "hunter2"),
        ('database_url = "mysql://dqr:hunter2@db.example.org/dqr"', "hunter2"),
        ('database_url = "postgresql+nope://dqr:hunter2@db/dqr"', "hunter2"),
    ):
        config.write_text(content + "\n")
        result = run_in_process("dqrxfer-server", "db", "current", "--config", str(config))
        assert result.returncode == 2 and "configuration error" in result.stderr
        assert secret not in result.stderr, result.stderr


def test_a_database_that_cannot_be_reached_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('database_url = "postgresql+psycopg://dqr:hunter2@127.0.0.1:1/dqr"\n')
    result = run_in_process(
        "dqrxfer-server", "db", "upgrade", "--config", str(config), "--data-dir", str(tmp_path)
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
    assert result.stderr.startswith("dqrxfer-server: cannot use the database (database_url): ")
    assert len(result.stderr.splitlines()) == 1


#: Packages a command imports only once it works (a quarter to half a second
#: of CPU before the first line it prints, on every start).
HEAVY_PACKAGES = ("alembic", "flask", "gunicorn", "sqlalchemy", "werkzeug")

#: Runs dqrxfer-server's main with sys.argv[1:]; prints its exit status and the
#: heavy packages it imported, as JSON, on the last line.
IMPORTS_OF_MAIN = f"""
import json, sys
from dqrxfer.server.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as stop:
    status = stop.code
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY_PACKAGES!r}))
print(json.dumps([status, heavy]))
"""


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["cleanup"],
        ["db", "current"],
        ["db", "upgrade"],
        ["reports", "list"],
        ["reindex"],
        ["--help"],
        ["serve", "--help"],
        ["--version"],
    ],
    ids=" ".join,
)
def test_help_version_and_a_config_error_import_no_database_or_web_package(
    tmp_path: Path, command: list[str]
) -> None:
    """The configuration is checked, and --help answered, before SQLAlchemy,
    Flask or the app are imported: a mistake is said at once."""
    config = tmp_path / "server.toml"
    config.write_text("lock_timeout = -1\n")
    options = [] if "--help" in command or "--version" in command else ["--config", str(config)]
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_OF_MAIN, *command, *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    status, heavy = json.loads(result.stdout.splitlines()[-1])
    if options:
        assert status == 2, result.stderr
        assert result.stderr.startswith("dqrxfer-server: configuration error: lock_timeout: ")
    else:
        assert status == 0, result.stderr
    assert heavy == [], f"{' '.join(command)} imported {heavy}"


def test_booleans_are_read_as_written_and_defaults_apply(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        'serve_reports = false\nmetrics = false\nlock_timeout = 0\nsites = ["LLO", "lho"]\n'
        '[auth]\npublic_read = false\ncookie_secure = "auto"\n' + PROJECT
    )
    settings = load_settings(config, tmp_path)
    assert settings.serve_reports is False and settings.metrics is False
    assert settings.auth.public_read is False and settings.auth.cookie_secure is None
    assert settings.lock_timeout == 0.0 and settings.sites == ("llo", "lho")
    assert settings.read_timeout == 60.0 and settings.projects["O4"].sites == ("llo", "lho")
    config.write_text("serve_reports = true\n")
    assert load_settings(config, tmp_path).serve_reports is True


def test_the_archive_limits_default_to_the_documented_values(tmp_path: Path) -> None:
    """docs/operators/configuration.md; the hostile archives of
    tests/test_archive_hostile.py run under a lower member limit."""
    config = tmp_path / "server.toml"
    config.write_text(PROJECT)
    for settings in (load_settings(None, tmp_path), load_settings(config, tmp_path)):
        limits = settings.projects["O4"].tar
        assert (limits.max_members, limits.max_bytes, limits.max_ratio) == (50_000, 64 << 30, 200)


def test_a_key_is_one_declaration() -> None:
    """The scheme an added key uses: one field, checked and defaulted by the loader."""

    @dataclass(frozen=True)
    class Limits:
        max_unfinished_bytes: int = key(integer(minimum=1, unit="bytes"), 1024)

    assert with_defaults(Limits, read_table(Limits, {}, "")) == {"max_unfinished_bytes": 1024}
    assert read_table(Limits, {"max_unfinished_bytes": 5}, "") == {"max_unfinished_bytes": 5}
    with pytest.raises(ConfigError, match=r"^auth.max_unfinished_bytes: must be a positive whole"):
        read_table(Limits, {"max_unfinished_bytes": -1}, "auth.")
