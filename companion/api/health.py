"""Liveness and readiness."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from companion.api import services
from companion.api.problems import problem
from companion.api.security import public
from companion.store.db import ensure_indexes

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
        import sys

        return {"status": "ok", "scheduler_in_process": "companion.jobs.worker" in sys.modules}


@blp.route("/readyz")
class Ready(MethodView):
    @public
    @blp.response(200, HealthSchema)
    @blp.doc(security=[])
    def get(self):
        """Ready to serve: the database answers (and indexes exist)."""
        svc = services()
        try:
            svc.client.admin.command("ping")
            if getattr(svc, "indexes_pending", False):
                ensure_indexes(svc.db)
                svc.indexes_pending = False
        except Exception:  # noqa: BLE001 - any failure means not ready
            return problem(503, "Service unavailable", "the database is not reachable",
                           headers={"Retry-After": "5"})
        return {"status": "ready", "scheduler_in_process": False}
