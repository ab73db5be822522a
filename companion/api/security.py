"""Deny by default: every view declares who may call it; everything else is unreachable.

`@allow(Role.PATIENT, ...)` on a view method names the roles; `@public` marks the few routes that
need no credentials (login, health). A route with neither answers 404, as if it did not exist.
The role check is only the first gate: object-level access is decided per patient by
`access.require` (see companion.services.access).
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, current_app, g, request

from companion.domain.access import Actor, Operation, Relationship, Role
from companion.domain.errors import Forbidden, NotFound, Unauthorized

ROLES_ATTR = "_companion_roles"
PUBLIC = "public"
# Routes that flask-smorest and Flask add themselves: the API description and static files.
_FRAMEWORK_ENDPOINTS = ("api-docs.", "static", "swagger_ui_bundle")
WEB_ENDPOINTS = "web."


def allow(*roles: Role) -> Callable:
    def mark(view):
        setattr(view, ROLES_ATTR, frozenset(r.value for r in roles))
        return view

    return mark


def public(view):
    setattr(view, ROLES_ATTR, frozenset({PUBLIC}))
    return view


def declared_roles(app: Flask, endpoint: str, method: str) -> frozenset[str] | None:
    """The roles a route declares for a method, or None when it declares none."""
    view = app.view_functions.get(endpoint)
    if view is None:
        return None
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        handler = getattr(view_class, method.lower(), None)
        if handler is None and method == "HEAD":
            handler = getattr(view_class, "get", None)
        return getattr(handler, ROLES_ATTR, None) if handler else None
    return getattr(view, ROLES_ATTR, None)


def current_actor() -> Actor:
    return g.actor


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require_patient(patient_id: str, operation: Operation) -> Relationship:
    """Object-level check for the current caller; records a denial for the audit trail."""
    from companion.api import auditing

    try:
        return current_app.extensions["companion"].access.require(g.actor, patient_id, operation)
    except (NotFound, Forbidden):
        auditing.note(patient_ids=[patient_id], resource="patient", action=_action_of(operation))
        raise


def _action_of(operation: Operation) -> str:
    return "R" if operation is Operation.READ else "U"


def _action_of_method() -> str:
    return {"GET": "R", "HEAD": "R", "POST": "C", "DELETE": "D"}.get(request.method, "U")


def install(app: Flask) -> None:
    @app.before_request
    def authenticate_and_gate():
        if request.routing_exception is not None or request.endpoint is None:
            return None  # Flask answers 404/405 itself, through the problem handler
        if request.endpoint.startswith(_FRAMEWORK_ENDPOINTS):
            return None
        if request.endpoint.startswith(WEB_ENDPOINTS):
            return None  # the clinician pages sign in with a cookie; their own gate applies these rules
        roles = declared_roles(app, request.endpoint, request.method)
        if not roles:
            raise NotFound("no such resource")
        if PUBLIC in roles:
            return None
        token = _bearer()
        if not token:
            raise Unauthorized("authentication required")
        services = app.extensions["companion"]
        actor = services.tokens.actor_from(token)
        if actor.role is Role.GATEWAY and not services.gateway_active(actor.id):
            raise Unauthorized("invalid or expired token")
        g.actor = actor
        if actor.role.value not in roles:
            raise Forbidden("this role may not call this route")
        patient_id = (request.view_args or {}).get("patient_id")
        if patient_id is not None:
            # Before the body is even parsed: a caller with no relationship to this patient gets the
            # same 404 whatever they send, so neither validation errors nor timing reveal the patient.
            relationship, _ = services.access.relationship(actor, patient_id)
            if relationship is Relationship.NONE:
                from companion.api import auditing

                auditing.note(patient_ids=[patient_id], resource="patient", action=_action_of_method())
                raise NotFound("no such patient, or no access to them")
        return None
