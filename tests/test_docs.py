"""The documentation site builds with warnings as errors, shows the commands'
real --help, and its configuration reference names every key the server
accepts."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
        "operators/frontends",
        "operators/troubleshooting",
    ):
        assert (built / f"{page}.html").is_file(), page
    # The flow diagram is rendered, not left as source.
    assert list((built / "_images").glob("graphviz-*.svg"))


def test_command_output_is_the_real_help(built: Path) -> None:
    upload = (built / "users" / "upload.html").read_text()
    assert "usage: dqr-upload" in upload and "--chunk-size" in upload
    database = (built / "operators" / "database.html").read_text()
    assert "usage: dqrxfer-server db" in database and "backup" in database


def accepted_keys(module: str, name: str) -> set[str]:
    """The keys the configuration loader accepts: the set assigned to ``name``."""
    tree = ast.parse((REPO / module).read_text())
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and isinstance(
            node.value, ast.Set
        ):
            return {elt.value for elt in node.value.elts if isinstance(elt, ast.Constant)}
    raise AssertionError(f"{module} no longer has its `{name}` set of keys")


@pytest.mark.parametrize(
    ("module", "name", "section"),
    [
        ("server/config.py", "known", "## Top-level keys"),
        ("server/config.py", "PROJECT_KEYS", "## `[projects.<name>]`"),
        ("server/auth/settings.py", "_KNOWN_KEYS", "## `[auth]`"),
        ("server/auth/settings.py", "_RULE_KEYS", "Each `[[auth.rules]]` table"),
    ],
)
def test_configuration_reference_names_every_key(module: str, name: str, section: str) -> None:
    reference = (DOCS / "operators" / "configuration.md").read_text()
    assert section in reference
    # The section's first table: from the heading to the next blank line after a table.
    part = reference.split(section, 1)[1]
    table = re.search(r"(^\|.*\|\n)+", part, re.MULTILINE)
    assert table is not None
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table.group(0), re.MULTILINE))
    keys = accepted_keys(module, name)
    assert len(keys) >= 4
    missing = sorted(keys - documented)
    assert not missing, f"keys of {module} missing from docs/operators/configuration.md: {missing}"
