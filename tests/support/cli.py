"""Run the project's console scripts (``dqr-upload``, ``dqrxfer-server``, ...) as a user would."""

from __future__ import annotations

import importlib
import io
import logging
import os
import subprocess
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout

from .live import tool


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``args[0]`` (the script beside this interpreter) with the rest as its
    arguments and ``env`` over this process's environment; capture its output."""
    command = [tool(args[0]), *args[1:]]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


#: The console scripts whose ``main`` :func:`run_in_process` may call: the
#: operator's commands, which keep no state between runs.
IN_PROCESS_MAINS = {"dqrxfer-server": "dqrxfer.server.cli"}


def run_in_process(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """What :func:`run_cli` gives, from ``main`` called in this process.

    The fast tier for tests of a command's output, rules and exit status
    (the command's parser, settings, database and files are the real ones;
    only the interpreter's start, about half a second of CPU, is left out).
    The console script is ``sys.exit(main())``: an exception ``main`` lets
    through is printed as the interpreter prints it, with status 1. Logging
    is set up afresh as in a new process and put back afterwards.
    ``tests/test_cli_in_process.py`` runs commands both ways and compares.
    ``serve`` is not run here: it forks and replaces handlers.
    """
    module = importlib.import_module(IN_PROCESS_MAINS[args[0]])
    if "serve" in args[1:2]:
        raise ValueError("serve runs as a process of its own: use run_cli")
    out, err = io.StringIO(), io.StringIO()
    with _environment(env or {}), _fresh_logging(), redirect_stdout(out), redirect_stderr(err):
        try:
            status = module.main(list(args[1:]))
        except SystemExit as stop:
            status = _exit_status(stop.code, err)
        except Exception:  # the interpreter's report of an uncaught exception
            traceback.print_exc(file=err)
            status = 1
    return subprocess.CompletedProcess([args[0], *args[1:]], status, out.getvalue(), err.getvalue())


def _exit_status(code: object, err: io.StringIO) -> int:
    """``sys.exit(code)``'s status, as the interpreter makes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=err)
    return 1


@contextmanager
def _environment(changes: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _fresh_logging() -> Iterator[None]:
    """No handler on the root logger (so the command's ``basicConfig`` adds
    its own, writing to the redirected stderr), every logger's level as a new
    process has it; all of it restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, logger in logging.Logger.manager.loggerDict.items():
            if isinstance(logger, logging.Logger):
                logger.setLevel(levels.get(name, logging.NOTSET))
