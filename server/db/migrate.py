"""Alembic, driven from code: upgrade, downgrade, current, history, and the
start-up check that the database is at the revision the code expects.

Alembic is imported by the functions that migrate, not with this module:
with Mako and Pygments it holds about 8 MiB, which ``serve`` would otherwise
keep in its master and share with every worker, none of which needs it
(``serve`` checks the schema in a child process: server/cli.py), and it
costs every command about 0.15 s of CPU to import.  Where nothing migrates
(the start-up check, ``db current``, ``db upgrade`` at head) the revisions
are read without it: the database's from Alembic's version table with
SQLAlchemy Core, the code's head from the ``revision`` and ``down_revision``
assignments of the migration files, parsed (not executed, as Alembic's
``ScriptDirectory`` does, which would import Alembic and the models).
tests/test_schema_revisions.py holds both to Alembic's answers.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Iterator
from importlib.resources import files
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import Engine


#: Alembic's table of the database's revisions (its default name; env.py
#: keeps the default) and its one column.
VERSION_TABLE = "alembic_version"
VERSION_COLUMN = "version_num"

#: The files Alembic takes for revisions in a versions directory (its
#: ``_only_source_rev_file``): Python sources but ``__init__.py`` and
#: editors' lock files.
_REVISION_FILE = re.compile(r"(?!\.\#|__init__)(.*\.py)$")


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
    """Upgrade to ``revision``; to ``head`` when the database is there
    already, nothing is done and Alembic is not imported (it would find
    nothing to run)."""
    if revision == "head" and current_revision(engine) == head_revision():
        return
    from alembic import command

    _run(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    _run(engine, command.downgrade, revision)


def _scripts() -> ScriptDirectory:
    """The revisions shipped with the code (no database needed)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_base_config())


def _revision_files() -> Iterator[str]:
    """The source of each revision shipped with the code."""
    for entry in (files("dqrxfer.migrations") / "versions").iterdir():
        if entry.is_file() and _REVISION_FILE.match(entry.name):
            yield entry.read_text(encoding="utf-8")


def _revision_links(source: str) -> tuple[str, tuple[str, ...]]:
    """A revision file's ``revision`` and its ``down_revision`` (none, one,
    or several for a merge), from the module-level assignments."""
    values: dict[str, object] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
            values[target.id] = ast.literal_eval(value)
    revision, down = values.get("revision"), values.get("down_revision")
    if not isinstance(revision, str):
        raise RuntimeError(f"a migration without a literal revision id:\n{source[:200]}")
    if isinstance(down, str):
        return revision, (down,)
    if isinstance(down, (list, tuple)):
        return revision, tuple(str(item) for item in down)
    return revision, ()


@functools.cache
def head_revisions() -> tuple[str, ...]:
    """The revisions shipped with the code that no other one revises
    (Alembic's heads; one unless the history branches), sorted.  Read once:
    the files are the code's, they do not change while it runs."""
    links = dict(_revision_links(source) for source in _revision_files())
    revised = {down for downs in links.values() for down in downs}
    return tuple(sorted(set(links) - revised))


def head_revision() -> str | None:
    """The revision this code needs (None if it ships none)."""
    heads = head_revisions()
    if len(heads) > 1:
        raise RuntimeError(f"the migrations have several heads: {', '.join(heads)}")
    return heads[0] if heads else None


def current_revisions(engine: Engine) -> tuple[str, ...]:
    """The revisions the database records (Alembic's ``get_current_heads``):
    none for an empty database, several where the history branched."""
    from sqlalchemy import String, column, select, table

    with engine.connect() as connection:
        # The check Alembic makes (and it is not a failed SELECT, which
        # would abort a PostgreSQL transaction).
        if not connection.dialect.has_table(connection, VERSION_TABLE, None):
            return ()
        query = select(column(VERSION_COLUMN, String)).select_from(table(VERSION_TABLE))
        return tuple(connection.scalars(query))


def current_revision(engine: Engine) -> str | None:
    """The database's revision, None when it has none; several (branches,
    at no head) are joined with ", " -- where Alembic's
    ``get_current_revision`` raises, this says them."""
    return ", ".join(current_revisions(engine)) or None


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
