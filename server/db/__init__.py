"""The database: typed SQLAlchemy 2 models, engine/session set-up, schema checks.

The schema changes only through Alembic revisions in ``migrations/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .models import Base, Event, Report, ReportFile, Upload
    from .session import Database

__all__ = ["Base", "Database", "Event", "Report", "ReportFile", "Upload"]

# Imported when first used (..lazy says why): ``db.presence`` and
# ``db.migrate`` serve ``dqrxfer-server`` before it knows it needs SQLAlchemy.
__getattr__ = lazy_exports(
    __name__,
    {
        ".models": ("Base", "Event", "Report", "ReportFile", "Upload"),
        ".session": ("Database",),
    },
)
