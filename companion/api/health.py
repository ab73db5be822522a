"""Liveness and readiness."""

from __future__ import annotations

import sys

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from companion.domain.errors import ServiceUnavailable
from companion.http import services
from companion.http.bodies import ignores_query
from companion.http.problems import unavailable
from companion.http.security import public

blp = Blueprint("health", __name__, description="Liveness and readiness probes")


class HealthSchema(Schema):
    status = fields.String()
    scheduler_in_process = fields.Boolean(
        metadata={"description": "always false: the scheduler runs only in the worker process"})
    worker = fields.String(metadata={"description": "the scheduler worker by its heartbeat: `ok` (a leader beat "
                                                    "recently), `stale` or `absent`; information only, it does "
                                                    "not make this process unready"})
    worker_heartbeat_age_s = fields.Float(allow_none=True, metadata={
        "description": "seconds since the leading worker's (or else any worker's) last heartbeat"})


@blp.route("/healthz")
class Health(MethodView):
    @public
    @ignores_query
    @blp.response(200, HealthSchema)
    @blp.doc(security=[])
    @blp.doc(operationId="check_liveness")
    def get(self):
        """The process is up (does not touch the database)."""
        return {"status": "ok", "scheduler_in_process": "companion.jobs.worker" in sys.modules}


@blp.route("/readyz")
class Ready(MethodView):
    @public
    @ignores_query
    @blp.response(200, HealthSchema)
    @blp.doc(security=[])
    @blp.doc(operationId="check_readiness")
    def get(self):
        """Ready to serve: the database answers and the indexes are as the code declares them (503 with what
        is missing otherwise); also says whether the scheduler worker's heartbeat is recent."""
        svc = services()
        try:
            svc.health.ready()
            worker = svc.heartbeats.status()
        except ServiceUnavailable as exc:
            return unavailable(exc.detail)
        age = round(worker.age_s, 1) if worker.age_s is not None else None
        return {"status": "ready", "scheduler_in_process": False, "worker": worker.state,
                "worker_heartbeat_age_s": age}
