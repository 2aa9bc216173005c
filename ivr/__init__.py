"""Hotline: the IVR backend of a payment app's customer-service line."""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix


def create_app(overrides: Mapping[str, object] | None = None) -> Flask:
    """Build an app. Reads the environment and the config file; connects to nothing yet.

    Refuses to start (SettingsError, ConfigError) on missing settings or an invalid config.
    """
    from ivr import cli
    from ivr.handlers import agent, api, health, voice
    from ivr.privacy import install_log_scrubbing
    from ivr.services import Services
    from ivr.settings import default_database_url, read_settings

    app = Flask(__name__, instance_path=os.path.abspath("instance"))
    app.config.update(read_settings(os.environ, overrides))
    if not app.config.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = default_database_url(app.instance_path)
    app.json.ensure_ascii = False  # tickets and prompts in Japanese and Chinese stay readable
    if not app.config.get("PUBLIC_BASE_URL"):
        # Without a configured origin, signatures are checked against the URL as the proxy in
        # front of us saw it: trust one hop's X-Forwarded-Proto and -Host.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1, x_host=1)
    install_log_scrubbing()
    app.extensions["hotline"] = Services.build(app)
    app.register_blueprint(voice.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(agent.bp)
    cli.init_app(app)
    return app
