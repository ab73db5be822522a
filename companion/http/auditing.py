"""Audit on the request path: views note what patient data they touched; after the view, one event per
touched patient is written with the outcome. If that write fails, the response is replaced by a 503 that
carries no patient data (fail closed).

A write (POST, PUT, PATCH, DELETE by a signed-in caller) is recorded twice: an *intent* before the view
runs, and its outcome after. If the intent cannot be written the view never runs, so no data is changed
without a record of the attempt; if the outcome cannot be written after the data changed, the answer is a
503 and the intent stays without an outcome, which `companion audit-verify` reports.
"""

from __future__ import annotations

import logging

from flask import Flask, g, request

from companion.domain.errors import ServiceUnavailable
from companion.http import correlation, services
from companion.http.problems import unavailable

log = logging.getLogger(__name__)

ACTIONS = {"C", "R", "U", "D", "E", "emergency", "search"}
INTENT, OUTCOME = "intent", "outcome"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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


def _event(action: str, resource: str, resource_ids: list[str], status: int | None, outcome: str) -> dict:
    actor = g.get("actor")
    return {
        "actor_id": actor.id if actor else None,
        "actor_role": actor.role.value if actor else "anonymous",
        "action": action,
        "resource_type": resource,
        "resource_ids": resource_ids,
        "outcome": outcome,
        "status": status,
        "request_id": g.get("request_id"),
        "method": request.method,
        "route": request.url_rule.rule if request.url_rule else None,
        "client_ip": request.remote_addr,
        "user_agent": (request.user_agent.string or "")[:200],
    }


def begin_write() -> None:
    """Write this request's intent before its view runs, if it is a signed-in caller's write: the gates call
    this last. Raises (the request fails, nothing is written) when the audit trail cannot take it."""
    if request.method not in WRITES or g.get("actor") is None or g.get("audit_intent"):
        return
    patient_id = (request.view_args or {}).get("patient_id")
    intent = {**_event(INTENT, "request", [], None, "pending"), "patient_ids": [patient_id]}
    try:
        services().audit.write([intent])
    except Exception as exc:  # noqa: BLE001 - any failure: the write must not happen unrecorded
        log.error("audit intent could not be written (%s); refusing the write", type(exc).__name__)
        raise ServiceUnavailable("the request could not be recorded; try again") from exc
    g.audit_intent = True


def install(app: Flask) -> None:
    @app.before_request
    def assign_request_id():
        # The server's own id, unique per request: a write's intent and outcome are paired by it. The
        # caller's X-Request-ID and traceparent are kept beside it (companion.http.correlation).
        g.request_id = correlation.request_id()

    @app.after_request
    def write_audit(response):
        notes = g.pop("audit_notes", None)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if not notes and not g.get("audit_intent"):
            return response
        status, outcome = response.status_code, _outcome(response.status_code)
        events = []
        for n in notes or []:
            base = _event(n["action"], n["resource"], n["resource_ids"], status, outcome)
            # One event per patient: a search over three patients lists all three (and can be
            # found from each patient's side).
            events.extend({**base, "patient_ids": [pid]} for pid in n["patient_ids"] or [None])
        if not events:  # a write that noted nothing still closes its intent
            patient_id = (request.view_args or {}).get("patient_id")
            events = [{**_event(OUTCOME, "request", [], status, outcome), "patient_ids": [patient_id]}]
        try:
            services().audit.write(events)
        except Exception as exc:  # noqa: BLE001 - any failure must fail the request closed
            log.error("audit write failed (%s); withholding the response", type(exc).__name__)
            withheld = unavailable("the request could not be recorded; try again")
            withheld.headers["X-Request-ID"] = g.get("request_id", "")
            return withheld
        return response
