"""Alembic, driven from code: upgrade, downgrade, current, history, and the
start-up check that the database is at the revision the code expects.

Alembic is imported by the functions that use it, not with this module:
with Mako and Pygments it holds about 8 MiB, which ``serve`` would otherwise
keep in its master and share with every worker, none of which needs it
(``serve`` checks the schema in a child process: server/cli.py).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import Engine


class SchemaOutOfDate(RuntimeError):
    """The database is not at the code's head revision."""


def _base_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(files("dqrxfer.migrations")))
    return config


def alembic_config(engine: Engine) -> Config:
    config = _base_config()
    config.set_main_option(
        "sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%")
    )
    return config


def _run(engine: Engine, action: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        action(config, *args, **kwargs)


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    _run(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    _run(engine, command.downgrade, revision)


def _scripts() -> ScriptDirectory:
    """The revisions shipped with the code (no database needed)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_base_config())


def head_revision() -> str | None:
    """The revision this code needs."""
    return _scripts().get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def history() -> list[str]:
    """The revisions shipped with the code, newest first."""
    return [
        f"{rev.down_revision or '<base>'} -> {rev.revision}: {rev.doc}"
        for rev in _scripts().walk_revisions()
    ]


def check_up_to_date(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDate` naming the command to run when behind."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at revision {current or '<empty>'}, this code needs {head}: "
            "run 'dqrxfer-server db upgrade' (with the same --config / --data-dir)"
        )
