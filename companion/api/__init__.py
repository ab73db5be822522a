"""HTTP adapters: one blueprint per area of the API, each in its own module."""

from __future__ import annotations

import importlib

from flask_smorest import Api

# Each module exposes `blp`, a flask_smorest.Blueprint. Add a module here to expose its routes.
BLUEPRINT_MODULES = [
    "companion.api.health",
    "companion.api.auth",
    "companion.api.patients",
    "companion.api.caregivers",
    "companion.api.admin",
    "companion.api.gateways",
    "companion.api.clinician",
    "companion.api.review",
    "companion.api.ingestion",
    "companion.api.sessions",
    "companion.api.plans",
    "companion.api.library",
    "companion.api.reminders",
    "companion.api.diary",
    "companion.api.progress",
]


def register_blueprints(api: Api) -> None:
    for name in BLUEPRINT_MODULES:
        api.register_blueprint(importlib.import_module(name).blp)


def services():
    from flask import current_app

    return current_app.extensions["companion"]
