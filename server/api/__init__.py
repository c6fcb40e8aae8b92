"""The JSON API under ``/api/v1/``: ping, links of an event's reports, upload records."""

from .routes import blueprint

__all__ = ["blueprint"]
