"""Companion: the API for people living with chronic pain who use a wearable TENS unit."""

from __future__ import annotations

import logging
import os

from flask import Flask

from companion.config import load_settings
from companion.logs import configure_logging

log = logging.getLogger(__name__)


def create_app(test_config: dict | None = None, *, services=None) -> Flask:
    """Application factory. `test_config` overrides settings (see companion.config.Settings)."""
    from companion.api import auditing, problems, register_blueprints, security
    from companion.services.container import Services
    from companion.store.db import ensure_indexes
    from companion.web import register as register_pages

    configure_logging()
    settings = load_settings(test_config)
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
    api = problems.ProblemApi(app)
    register_blueprints(api)
    register_pages(app)
    _serve_docs_assets(app)
    auditing.install(app)
    security.install(app)
    problems.register(app)
    if os.environ.get("COMPANION_SKIP_INDEXES") != "1":
        try:
            ensure_indexes(app.extensions["companion"].db)
        except Exception as exc:  # noqa: BLE001 - the app starts; /readyz reports the database
            log.warning("could not ensure indexes at start-up (%s); /readyz will retry", type(exc).__name__)
            app.extensions["companion"].indexes_pending = True
    return app


def _serve_docs_assets(app: Flask) -> None:
    import swagger_ui_bundle
    from flask import send_from_directory

    from companion.api.security import public

    folder = swagger_ui_bundle.swagger_ui_path

    @app.route("/docs-assets/<path:filename>", endpoint="swagger_ui_bundle")
    @public
    def docs_assets(filename):
        return send_from_directory(folder, filename)
