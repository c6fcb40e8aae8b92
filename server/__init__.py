"""The dqrxfer server (``pip install dqrxfer[server]``): a Flask app with the
tus endpoint at ``/files/``, the reports domain and the JSON API."""

from .app import create_app

__all__ = ["create_app"]
