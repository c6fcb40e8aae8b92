"""The JSON API under ``/api/v1/``: ping, links of an event's reports, recent
reports and events, upload records, and its OpenAPI document."""

from .routes import blueprint

__all__ = ["blueprint"]
