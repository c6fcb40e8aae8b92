"""The rules behind report publication, checked directly: archive member
names, link targets, the project configuration schema, ``--since``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dqrxfer.server.config import ConfigError, load_settings
from dqrxfer.server.reports.admin import AdminError, parse_since
from dqrxfer.server.reports.archive import (
    LINK,
    ArchiveRefused,
    TarLimits,
    check_links,
    normalise_member_name,
)
from support.cli import run_cli


@pytest.mark.parametrize(
    ("name", "normalised"),
    [
        ("./index.html", "index.html"),
        ("a//b/", "a/b"),
        ("./", ""),
        (".", ""),
        ("tier1/./plots/x.png", "tier1/plots/x.png"),
        ("S230518h_llo_10/index.html", "S230518h_llo_10/index.html"),
    ],
)
def test_member_names_are_normalised(name: str, normalised: str) -> None:
    assert normalise_member_name(name) == normalised


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("/etc/passwd", "absolute member names are not allowed"),
        ("a/../../b", "'..' is not allowed in member names"),
        ("..", "'..' is not allowed in member names"),
        (".git/config", "names may not start with '.' (hidden files are refused)"),
        ("a\\b", "names may not contain '\\', NUL or control characters"),
        ("a\x1bb", "names may not contain '\\', NUL or control characters"),
        ("x" * 256, "name components are limited to 255 bytes"),
        ("/".join(["d"] * 65), "member names are limited to 64 levels"),
    ],
)
def test_bad_member_names_are_refused(name: str, rule: str) -> None:
    with pytest.raises(ArchiveRefused) as refused:
        normalise_member_name(name)
    assert refused.value.rule == rule
    assert refused.value.member == name


def test_link_targets() -> None:
    existing = {"current": LINK, "data": "directory"}
    kind_of = existing.get
    check_links({"a/up": "../data/x.json", "latest": "data", "d/e/f": "../../data"}, kind_of)
    for links, rule in [
        ({"a": "/etc/passwd"}, "symbolic link to an absolute path"),
        ({"a/b": "../../x"}, "symbolic link points outside the report"),
        ({"a": "current/x.json"}, "resolves through another symbolic link ('current')"),
        ({"a": "current"}, "resolves through another symbolic link ('current')"),
        ({"a": "data/../current/../.."}, "resolves through another symbolic link"),
    ]:
        with pytest.raises(ArchiveRefused) as refused:
            check_links(links, kind_of)
        assert rule in refused.value.rule, (links, refused.value.rule)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return path


def test_project_configuration(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        f"""
tar_max_ratio = 50
[projects.O4]
reports_root = "{tmp_path / "o4"}"
url = "https://ldas-jobs.example.org/~detchar/dqr/O4/"
sites = ["LLO", "lho"]
staging_dir = "{tmp_path / "o4-staging"}"
max_upload_size = 1000
tar_max_members = 10
[projects.personal]
reports_root = "{tmp_path / "personal"}"
url = "/personal/"
""",
    )
    settings = load_settings(config, tmp_path / "data")
    o4, personal = settings.projects["O4"], settings.projects["personal"]
    assert o4.sites == ("llo", "lho") and o4.max_upload_size == 1000
    assert o4.tar == TarLimits(max_members=10, max_bytes=TarLimits().max_bytes, max_ratio=50)
    assert o4.staging == tmp_path / "o4-staging"
    assert personal.staging == tmp_path / "personal/.dqrxfer-staging"
    assert personal.tar.max_ratio == 50 and personal.sites == settings.sites
    assert o4.report_url("S230518h_dir/S230518h_llo_1") == (
        "https://ldas-jobs.example.org/~detchar/dqr/O4/S230518h_dir/S230518h_llo_1/"
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('reports_root = "/r"\nurl = "/r/"\nroot = "/x"', "projects.O4.root: unknown key"),
        ('url = "/r/"', "projects.O4.reports_root: is required"),
        ('reports_root = "relative"\nurl = "/r/"', "projects.O4.reports_root: must be an absolute"),
        ('reports_root = "/r"\nurl = "ftp://x"', "projects.O4.url: must be an http(s) URL"),
        ('reports_root = "/r"\nurl = "/r/"\ntar_max_members = 0', "tar_max_members: must be a pos"),
        ('reports_root = "/r"\nurl = "/r/"\nsites = ["geo"]', "projects.O4.sites: geo not among"),
        ('reports_root = "/r"\nurl = "/r/"\nsites = "llo"', "projects.O4.sites: must be a list"),
    ],
)
def test_bad_project_configuration_is_named(tmp_path: Path, table: str, message: str) -> None:
    config = write(tmp_path, f"[projects.O4]\n{table}\n")
    with pytest.raises(ConfigError) as error:
        load_settings(config, tmp_path)
    assert message in str(error.value)


def test_bad_project_name_and_cli_exit_status(tmp_path: Path) -> None:
    config = write(tmp_path, '[projects."O4 run"]\nreports_root = "/r"\nurl = "/r/"\n')
    result = run_cli("dqrxfer-server", "reports", "list", "--config", str(config))
    assert result.returncode == 2
    assert "configuration error: projects.O4 run: project names are letters" in result.stderr


def test_since() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("2w", now) == now - timedelta(weeks=2)
    assert parse_since("2026-11-27", now) == datetime(2026, 11, 27, tzinfo=UTC)
    assert parse_since("2026-11-27T10:00+02:00", now).utcoffset() == timedelta(hours=2)
    with pytest.raises(AdminError):
        parse_since("last week", now)
