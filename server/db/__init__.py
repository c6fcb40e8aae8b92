"""The database: typed SQLAlchemy 2 models, engine/session set-up, schema checks.

The schema changes only through Alembic revisions in ``migrations/``.
"""

from .models import Base, Event, Report, ReportFile, Upload
from .session import Database

__all__ = ["Base", "Database", "Event", "Report", "ReportFile", "Upload"]
