"""Audit on the request path: views note what patient data they touched; after the view, one event
per touched patient is written with the outcome. If that write fails, the response is replaced by a
503 that carries no patient data (fail closed)."""

from __future__ import annotations

import logging
import uuid

from flask import Flask, g, request

from companion.http import services
from companion.http.problems import unavailable

log = logging.getLogger(__name__)

ACTIONS = {"C", "R", "U", "D", "E", "emergency", "search"}


def note(*, patient_ids, resource: str, action: str, resource_ids=()) -> None:
    """Record that this request touches these patients' data (called before data is returned)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    g.setdefault("audit_notes", []).append(
        {"patient_ids": sorted(set(patient_ids)), "resource": resource, "action": action,
         "resource_ids": [str(r) for r in resource_ids][:500]}
    )


def _outcome(status: int) -> str:
    if status < 400:
        return "success"
    if status in (401, 403, 404):
        return "denied"
    return "error"


def install(app: Flask) -> None:
    @app.before_request
    def assign_request_id():
        g.request_id = uuid.uuid4().hex

    @app.after_request
    def write_audit(response):
        notes = g.pop("audit_notes", None)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if not notes:
            return response
        actor = g.get("actor")
        events = []
        for n in notes:
            base = {
                "actor_id": actor.id if actor else None,
                "actor_role": actor.role.value if actor else "anonymous",
                "action": n["action"],
                "resource_type": n["resource"],
                "resource_ids": n["resource_ids"],
                "outcome": _outcome(response.status_code),
                "status": response.status_code,
                "request_id": g.get("request_id"),
                "method": request.method,
                "route": request.url_rule.rule if request.url_rule else None,
                "client_ip": request.remote_addr,
                "user_agent": (request.user_agent.string or "")[:200],
            }
            # One event per patient: a search over three patients lists all three (and can be
            # found from each patient's side).
            events.extend({**base, "patient_ids": [pid]} for pid in n["patient_ids"] or [None])
        try:
            services().audit.write(events)
        except Exception as exc:  # noqa: BLE001 - any failure must fail the request closed
            log.error("audit write failed (%s); withholding the response", type(exc).__name__)
            return unavailable("the request could not be recorded; try again")
        return response
