"""The JSON API: one flask-smorest blueprint per area, each in its own module, each view one call into the
services (companion.http.services()) between translating HTTP in and the answer out."""

from __future__ import annotations

import importlib

from flask import Flask
from flask_smorest import Blueprint

from companion.http.problems import ProblemApi

# Unknown query parameters are refused like unknown body fields: each query schema's own ``unknown = RAISE``
# (companion.http.schemas.StrictSchema) decides, not webargs' default of dropping them from a query string.
# (A route with no query schema refuses any: companion.http.bodies.)
Blueprint.ARGUMENTS_PARSER.unknown = None

# Each module exposes `blp`, a flask_smorest.Blueprint. Add a module here to expose its routes.
BLUEPRINT_MODULES = [
    "companion.api.health",
    "companion.api.auth",
    "companion.api.patients",
    "companion.api.caregivers",
    "companion.api.consent",
    "companion.api.rights",
    "companion.api.admin",
    "companion.api.gateways",
    "companion.api.clinician",
    "companion.api.review",
    "companion.api.ingestion",
    "companion.api.sessions",
    "companion.api.push_tokens",
    "companion.api.preferences",
    "companion.api.alerts",
    "companion.api.adherence",
    "companion.api.plans",
    "companion.api.library",
    "companion.api.reminders",
    "companion.api.diary",
    "companion.api.progress",
]


def register(app: Flask, api: ProblemApi) -> None:
    """Register every area's blueprint, and serve the Swagger UI's assets."""
    from companion.api import operations

    for name in BLUEPRINT_MODULES:
        api.register_blueprint(importlib.import_module(name).blp)
    _serve_docs_assets(app)
    operations.register(app)
    api.document_later(lambda spec: operations.document(app, spec))


def _serve_docs_assets(app: Flask) -> None:
    import swagger_ui_bundle
    from flask import send_from_directory

    from companion.http.security import public

    folder = swagger_ui_bundle.swagger_ui_path

    @app.route("/docs-assets/<path:filename>", endpoint="swagger_ui_bundle")
    @public
    def docs_assets(filename):
        return send_from_directory(folder, filename)
