"""The application factory: settings -> services (:mod:`.services`) -> blueprints."""

from __future__ import annotations

import logging

from flask import Flask

from . import auth, untrusted
from .api import blueprint as api_blueprint
from .config import Settings, load_settings
from .cors import CorsPolicy
from .health import blueprint as health_blueprint
from .proxy import TrustedProxies
from .services import build_services
from .services import install as install_services
from .tus import cors as tus_cors_needs
from .tus.blueprint import blueprint_for
from .tus.metrics import metrics_view
from .web import blueprint as pages_blueprint
from .web import listings_blueprint

log = logging.getLogger("dqrxfer.server")


def create_app(settings: Settings | None = None, *, check_schema: bool = True) -> Flask:
    """Build the app.  ``settings`` default to :func:`load_settings` (config from
    ``DQRXFER_CONFIG`` or the embedded default)."""
    settings = settings or load_settings()
    app = Flask(__name__)
    # Never let Flask buffer a whole upload: bodies are streamed by the tus layer.
    app.config["MAX_CONTENT_LENGTH"] = None

    built = build_services(settings, check_schema=check_schema)
    install_services(app, built)
    auth.init_app(app, settings.auth)
    tus_cors = CorsPolicy(
        settings.cors_origins,
        methods=tus_cors_needs.METHODS,
        allow_headers=tus_cors_needs.ALLOW_HEADERS,
        expose_headers=tus_cors_needs.EXPOSE_HEADERS,
        max_age=tus_cors_needs.MAX_AGE,
    )
    app.register_blueprint(
        blueprint_for(built.uploads, identify=auth.current_principal, cors=tus_cors)
    )
    app.register_blueprint(api_blueprint)
    app.register_blueprint(health_blueprint)
    if settings.metrics:
        # Like the health probe: the front end limits it to the monitoring.
        app.add_url_rule("/metrics", "metrics", auth.exempt(metrics_view))
    proxies = settings.forwarded_proxies
    if proxies:
        # Flask's documented way to wrap the app in WSGI middleware; to mypy,
        # assigning to a method.
        app.wsgi_app = TrustedProxies(app.wsgi_app, proxies)  # type: ignore[method-assign]
    app.register_blueprint(pages_blueprint)
    untrusted.install(app)
    # The report tree's files (embedded default only: in production the web
    # server in front serves them) and its directory listings (always).
    app.register_blueprint(listings_blueprint)
    return app
