"""``support.cli.run_in_process`` gives what the command gives as a process.

The same sequence of ``dqrxfer-server`` commands runs on two data
directories made alike, one command by one as a process (``run_cli``) and by
its ``main`` in this process (``run_in_process``): exit status, standard
output and standard error must be the same, with only the data directory's
own path and the times of day told apart.  The sequence covers what the
fast tier's tests rely on: output on both streams, log lines (``-v``), exit
statuses 0, 1 and 2, argparse's usage errors, a configuration error, and
commands that change the database and the report tree.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from support.cli import run_cli, run_in_process

#: The commands, in order; ``{data}`` is the data directory, ``{source}`` a
#: report directory produced outside it, ``{config}`` a configuration file.
SEQUENCE = [
    ["--version"],
    ["reports", "list", "--data-dir", "{data}"],  # no database yet: 2
    ["db", "upgrade", "--data-dir", "{data}"],
    ["-v", "db", "current", "--data-dir", "{data}"],
    ["db", "history", "--data-dir", "{data}"],
    ["reports", "list", "--data-dir", "{data}"],  # no reports
    [
        "reports",
        "register",
        *("--graceid", "S230518h", "--site", "llo", "--revision", "1"),
        *("--data-dir", "{data}", "--path", "{source}"),
    ],
    ["reports", "list", "--data-dir", "{data}"],
    ["reports", "list", "--json", "--data-dir", "{data}"],
    ["reports", "list", "--since", "yesterday", "--data-dir", "{data}"],
    ["reports", "show", "S230518h_llo_1", "--data-dir", "{data}"],
    ["reports", "show", "S230101a", "--data-dir", "{data}"],
    ["reports", "show", "nonsense", "--data-dir", "{data}"],
    ["-v", "reindex", "--data-dir", "{data}"],
    ["cleanup", "--dry-run", "--data-dir", "{data}"],
    ["reports", "list", "--config", "{config}", "--data-dir", "{data}"],
    ["reports", "frobnicate", "--data-dir", "{data}"],
]

TIME_OF_DAY = re.compile(r"\d{4}-\d\d-\d\dT?[ \d:.+-]*(Z|UTC)?")

#: Lines a module logs when it is first imported (with ``-v``): a process
#: imports it every time, this process once.
FIRST_IMPORT_LINE = re.compile(r"^INFO:alembic\.runtime\.plugins:setup plugin .*\n", re.MULTILINE)


def prepare(root: Path) -> dict[str, str]:
    source = root / "made-at-cit"
    (source / "tier1").mkdir(parents=True)
    (source / "index.html").write_text("<html>cit</html>")
    (source / "tier1/data.json").write_text('{"cit": true}')
    config = root / "server.toml"
    config.write_text("lock_timeout = -1\n")
    return {"data": str(root / "data"), "source": str(source), "config": str(config)}


def told_apart(result: subprocess.CompletedProcess[str], root: Path) -> tuple[int, str, str]:
    def plain(text: str) -> str:
        text = FIRST_IMPORT_LINE.sub("", text.replace(str(root), "<root>"))
        return TIME_OF_DAY.sub("<time>", text)

    return result.returncode, plain(result.stdout), plain(result.stderr)


def test_each_command_gives_in_process_what_it_gives_as_a_process(tmp_path: Path) -> None:
    as_process, in_process = tmp_path / "process", tmp_path / "in-process"
    names = {root: prepare(root) for root in (as_process, in_process)}
    statuses = set()
    for command in SEQUENCE:
        expected = run_cli(
            "dqrxfer-server", *(part.format(**names[as_process]) for part in command)
        )
        got = run_in_process(
            "dqrxfer-server", *(part.format(**names[in_process]) for part in command)
        )
        assert told_apart(got, in_process) == told_apart(expected, as_process), command
        statuses.add(expected.returncode)
    assert statuses == {0, 1, 2}


def test_an_exception_main_lets_through_is_a_traceback_and_status_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dqrxfer.server.cli

    def broken(argv: list[str]) -> int:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(dqrxfer.server.cli, "main", broken)
    result = run_in_process("dqrxfer-server", "reports", "list")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert result.stderr.endswith("RuntimeError: broken on purpose\n")


def test_serve_is_refused() -> None:
    with pytest.raises(ValueError, match="serve runs as a process of its own"):
        run_in_process("dqrxfer-server", "serve", "--port", "1")
