"""Audit on the request path: views note what patient data they touched; after the view, one event per
touched patient is written with the outcome. If that write fails, the response is replaced by a 503 that
carries no patient data (fail closed).

A write (POST, PUT, PATCH, DELETE by a signed-in caller) is recorded twice: an *intent* before the view
runs, and its outcome after. If the intent cannot be written the view never runs, so no data is changed
without a record of the attempt; if the outcome cannot be written after the data changed, the answer is a
503 and the intent stays without an outcome, which `companion audit-verify` reports.

Every refusal is recorded: a 401 or 403 answer (a bad or missing token, a role the route does not serve, an
act the relationship does not allow, a failed sign-in) writes a ``denied`` event even when the view never
ran, naming the patient in the URL if there is one; so does a 404 from the access gate.

A gateway's routine calls (views marked :func:`routine`: its unit list and its units' status, every 30 s)
are counted per gateway, route and day instead of being written one by one (companion.services.audit).
"""

from __future__ import annotations

import logging

from flask import Flask, current_app, g, request

from companion.domain.errors import ServiceUnavailable
from companion.http import correlation, services
from companion.http.problems import unavailable

log = logging.getLogger(__name__)

ACTIONS = {"C", "R", "U", "D", "E", "emergency", "search"}
INTENT, OUTCOME = "intent", "outcome"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DENIALS = frozenset({401, 403})
ROUTINE_ATTR = "_companion_routine"
# The most patients one event names. An act over many patients (an admin adding a clinician to a team of
# thousands) is written as several events sharing the request id, as checklist H1 allows ("one record per item or
# per patient"): each stays far below the database's document limit, and every patient's access log finds one.
PATIENTS_PER_EVENT = 1000


def routine(view):
    """Mark a gateway's routine call (polled every few seconds): counted per day, not written per call."""
    setattr(view, ROUTINE_ATTR, True)
    return view


def handler_of(app: Flask, endpoint: str | None, method: str):
    """The function that serves ``method`` on ``endpoint`` (a MethodView's method, or the view itself)."""
    view = app.view_functions.get(endpoint) if endpoint else None
    if view is None:
        return None
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        handler = getattr(view_class, method.lower(), None)
        if handler is None and method == "HEAD":
            handler = getattr(view_class, "get", None)
        return handler
    return view


def _is_routine() -> bool:
    return bool(getattr(handler_of(current_app, request.endpoint, request.method), ROUTINE_ATTR, False))


def note(*, patient_ids, resource: str, action: str, resource_ids=(), denied: bool = False) -> dict:
    """Record that this request touches these patients' data (called before data is returned); returns the note,
    for :func:`also_touched`. ``denied``: the request is recorded as refused whatever its status."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if denied:
        g.audit_denied = True
    noted = {"patient_ids": sorted(set(patient_ids)), "resource": resource, "action": action,
             "resource_ids": [str(r) for r in resource_ids][:500]}
    g.setdefault("audit_notes", []).append(noted)
    return noted


def also_touched(noted: dict, patient_ids) -> None:
    """Add the patients a write turned out to touch (known once it is done) to the note made before it."""
    noted["patient_ids"] = sorted(set(noted["patient_ids"]) | {p for p in patient_ids if p})


def deny(patient_id: str | None) -> None:
    """Record this request as refused whatever its status (the clinician pages send a signed-out caller to the
    sign-in page with a redirect, not a 401)."""
    note(patient_ids=[patient_id] if patient_id else [], resource="patient" if patient_id else "request",
         action=_action_of_method(), denied=True)


def _action_of_method() -> str:
    return {"GET": "R", "HEAD": "R", "POST": "C", "DELETE": "D"}.get(request.method, "U")


def _outcome(status: int) -> str:
    if g.get("audit_denied"):
        return "denied"
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
    this last. Raises (the request fails, nothing is written) when the audit trail cannot take it. A routine
    gateway call writes no intent: it is counted once it is answered."""
    if request.method not in WRITES or g.get("actor") is None or g.get("audit_intent") or _is_routine():
        return
    patient_id = (request.view_args or {}).get("patient_id")
    intent = {**_event(INTENT, "request", [], None, "pending"), "patient_ids": [patient_id]}
    try:
        services().audit.write([intent])
    except Exception as exc:  # noqa: BLE001 - any failure: the write must not happen unrecorded
        log.error("audit intent could not be written (%s); refusing the write", type(exc).__name__)
        raise ServiceUnavailable("the request could not be recorded; try again") from exc
    g.audit_intent = True


def _events_for(notes: list[dict] | None, status: int) -> list[dict]:
    outcome = _outcome(status)
    if not notes and status in DENIALS:
        # Refused before (or by) the view without a note: record the refusal, with the patient in the URL.
        patient_id = (request.view_args or {}).get("patient_id") if request.url_rule else None
        notes = [{"patient_ids": [patient_id] if patient_id else [], "resource": "request",
                  "action": _action_of_method(), "resource_ids": []}]
    events = []
    for n in notes or []:
        # One event per interaction, naming every patient it touched: a search over three patients lists all
        # three, and is found from each patient's side (``patient_ids`` is indexed element by element). Past
        # PATIENTS_PER_EVENT patients, one event per so many.
        patient_ids = n["patient_ids"] or [None]
        for start in range(0, len(patient_ids), PATIENTS_PER_EVENT):
            events.append({**_event(n["action"], n["resource"], n["resource_ids"], status, outcome),
                           "patient_ids": patient_ids[start:start + PATIENTS_PER_EVENT]})
    if not events and g.get("audit_intent"):  # a write that noted nothing still closes its intent
        patient_id = (request.view_args or {}).get("patient_id")
        events = [{**_event(OUTCOME, "request", [], status, outcome), "patient_ids": [patient_id]}]
    return events


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
        status = response.status_code
        try:
            if notes and status < 400 and _is_routine() and not g.get("audit_intent"):
                for n in notes:
                    services().audit.count_heartbeat(_event(n["action"], n["resource"], [], status, "success")
                                                     | {"patient_ids": n["patient_ids"]})
                return response
            events = _events_for(notes, status)
            if events:
                services().audit.write(events)
        except Exception as exc:  # noqa: BLE001 - any failure must fail the request closed
            log.error("audit write failed (%s); withholding the response", type(exc).__name__)
            withheld = unavailable("the request could not be recorded; try again")
            withheld.headers["X-Request-ID"] = g.get("request_id", "")
            return withheld
        return response
