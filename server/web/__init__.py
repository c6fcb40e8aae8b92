"""Server-rendered HTML: the index of recent events, one page per event that
lists its reports with the jQuery helper, and the report tree's directory
listings (``/reports/``)."""

from .listings import blueprint as listings_blueprint
from .pages import blueprint

__all__ = ["blueprint", "listings_blueprint"]
