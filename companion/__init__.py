"""Companion: the API for people living with chronic pain who use a wearable TENS unit."""

from __future__ import annotations

import os

from flask import Flask

from companion.logs import configure_logging
from companion.settings import load_settings


def create_app(test_config: dict | None = None, *, services=None) -> Flask:
    """Application factory. `test_config` overrides settings (see companion.settings.Settings)."""
    from companion import api, web
    from companion.http import auditing, problems, security, server_time
    from companion.services.container import Services

    settings = load_settings(test_config)
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_content_length,
        API_TITLE="Companion API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="/docs-assets/",
        API_SPEC_OPTIONS={
            "info": {"description": "Therapy plans, reminders, pain diary, mindfulness library, "
                                    "TENS session ingestion and clinician review. Errors are RFC 9457 "
                                    "problem details."},
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                                              "bearerFormat": "JWT"}}},
            "security": [{"bearerAuth": []}],
        },
        JSON_SORT_KEYS=False,
    )
    app.extensions["companion"] = services or Services(settings)
    api.register(app, problems.ProblemApi(app))
    web.register(app)
    auditing.install(app)
    security.install(app)
    problems.register(app)
    server_time.install(app)
    if os.environ.get("COMPANION_SKIP_INDEXES") != "1":
        app.extensions["companion"].health.ensure_indexes_at_start()
    return app
