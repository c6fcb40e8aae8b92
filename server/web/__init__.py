"""Server-rendered HTML pages: the index of recent events and one page per
event that lists its reports with the jQuery helper."""

from .pages import blueprint

__all__ = ["blueprint"]
