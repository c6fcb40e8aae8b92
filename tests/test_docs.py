"""The documentation site builds with warnings as errors, shows the commands'
real --help, and its configuration reference names every key the server
accepts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dqrxfer.server.auth.settings import AuthSettings, RuleTable
from dqrxfer.server.config import ProjectConfig, Settings, load_settings
from dqrxfer.server.configkeys import declared_keys

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs-html")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(DOCS),
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, (
        "the docs do not build with -W (a new page must be added to a toctree in docs/index.md):\n"
        + result.stderr
    )
    return out


def test_site_builds_with_every_page(built: Path) -> None:
    for page in (
        "index",
        "introduction",
        "api",
        "performance",
        "reports",
        "users/upload",
        "users/exit-codes",
        "users/htcondor",
        "operators/configuration",
        "operators/database",
        "operators/commands",
        "operators/frontends",
        "operators/troubleshooting",
        "development",
    ):
        assert (built / f"{page}.html").is_file(), page
    # The flow diagram is rendered, not left as source.
    assert list((built / "_images").glob("graphviz-*.svg"))


def test_command_output_is_the_real_help(built: Path) -> None:
    upload = (built / "users" / "upload.html").read_text()
    assert "usage: dqr-upload" in upload and "--chunk-size" in upload
    database = (built / "operators" / "database.html").read_text()
    assert "usage: dqrxfer-server db" in database and "backup" in database
    commands = (built / "operators" / "commands.html").read_text()
    assert "usage: dqrxfer-server" in commands and "reindex" in commands
    assert 'href="commands.html"' in (built / "operators" / "index.html").read_text()


@pytest.mark.parametrize(
    ("table", "section"),
    [
        (Settings, "## Top-level keys"),
        (ProjectConfig, "## `[projects.<name>]`"),
        (AuthSettings, "## `[auth]`"),
        (RuleTable, "Each `[[auth.rules]]` table"),
    ],
)
def test_configuration_reference_names_every_key(table: type, section: str) -> None:
    reference = (DOCS / "operators" / "configuration.md").read_text()
    assert section in reference
    # The section's first table: from the heading to the next blank line after a table.
    part = reference.split(section, 1)[1]
    rows = re.search(r"(^\|.*\|\n)+", part, re.MULTILINE)
    assert rows is not None
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", rows.group(0), re.MULTILINE))
    keys = set(declared_keys(table))  # what the loader accepts
    assert len(keys) >= 4
    missing = sorted(keys - documented)
    assert not missing, f"keys of {table.__name__} missing from the configuration page: {missing}"


def test_the_multi_host_example_is_a_valid_configuration(tmp_path: Path) -> None:
    page = (DOCS / "operators" / "scaling.md").read_text()
    examples = re.findall(r"^```toml\n(.*?)^```", page, re.MULTILINE | re.DOTALL)
    assert len(examples) == 1
    config = tmp_path / "server.toml"
    config.write_text(examples[0])
    settings = load_settings(config)
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.lock_dead_host_timeout == 60
    assert set(settings.projects) == {"O4", "personal"}
