"""Liveness and readiness."""

from __future__ import annotations

import sys

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from companion.domain.errors import ServiceUnavailable
from companion.http import services
from companion.http.problems import unavailable
from companion.http.security import public

blp = Blueprint("health", __name__, description="Liveness and readiness probes")


class HealthSchema(Schema):
    status = fields.String()
    scheduler_in_process = fields.Boolean(
        metadata={"description": "always false: the scheduler runs only in the worker process"})


@blp.route("/healthz")
class Health(MethodView):
    @public
    @blp.response(200, HealthSchema)
    @blp.doc(security=[])
    def get(self):
        """The process is up (does not touch the database)."""
        return {"status": "ok", "scheduler_in_process": "companion.jobs.worker" in sys.modules}


@blp.route("/readyz")
class Ready(MethodView):
    @public
    @blp.response(200, HealthSchema)
    @blp.doc(security=[])
    def get(self):
        """Ready to serve: the database answers (and indexes exist)."""
        try:
            services().health.ready()
        except ServiceUnavailable as exc:
            return unavailable(exc.detail)
        return {"status": "ready", "scheduler_in_process": False}
