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


def accepted_keys() -> set[str]:
    """The top-level keys ``load_settings`` accepts (its ``known`` set)."""
    tree = ast.parse((REPO / "server" / "config.py").read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "known" for t in node.targets)
            and isinstance(node.value, ast.Set)
        ):
            return {elt.value for elt in node.value.elts if isinstance(elt, ast.Constant)}
    raise AssertionError("server/config.py no longer has its `known` set of keys")


def test_configuration_reference_names_every_key() -> None:
    reference = (DOCS / "operators" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", reference, re.MULTILINE))
    keys = accepted_keys()
    assert len(keys) >= 10
    missing = sorted(keys - documented)
    assert not missing, f"keys missing from docs/operators/configuration.md: {missing}"
