"""Deny by default: every view declares who may call it; everything else is unreachable.

`@allow(Role.PATIENT, ...)` on a view method names the roles; `@public` marks the few routes that
need no credentials (login, health). A route with neither answers 404, as if it did not exist.

The role check is only the first gate. For a URL that names a patient, the caller's standing with
that patient (a :class:`~companion.domain.access.Grant`: the relationship and, for a caregiver, what
the patient allowed) is decided once, before the body is parsed, and kept for the request: views ask
:func:`require_patient` for it with the operation they perform, services take it to decide what the
caller may see. It is read fresh on every request, so a revocation takes effect on the next one.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, g, request

from companion.domain.access import Actor, Decision, Grant, Operation, Relationship, Role
from companion.domain.errors import Forbidden, NotFound, Unauthorized
from companion.domain.people import Account
from companion.http import auditing, services
from companion.services.access import refusal
from companion.services.gateways import GatewayPaused

ROLES_ATTR = "_companion_roles"
PUBLIC = "public"
# Routes that flask-smorest and Flask add themselves: the API description and static files.
FRAMEWORK_ENDPOINTS = ("api-docs.", "static", "swagger_ui_bundle")
WEB_ENDPOINTS = "web."
NOT_FOUND = "no such patient, or no access to them"


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
    handler = auditing.handler_of(app, endpoint, method)
    return getattr(handler, ROLES_ATTR, None) if handler else None


def current_actor() -> Actor:
    return g.actor


def own_account(patient_id: str) -> Account | None:
    """The caller's account, read when their session was checked at the start of this request, if the caller
    is the patient ``patient_id`` (a service given it need not read it again); None otherwise."""
    account = g.get("account")
    return account if account is not None and account.id == patient_id and account.is_patient else None


def caller_account() -> Account:
    """The caller's own account, read when their session was checked at the start of this request."""
    return g.account


def client_address() -> str:
    """The caller's address: the socket's, or with ``COMPANION_TRUSTED_PROXIES`` the one the nearest trusted
    proxy saw (resolved by ProxyFix in the WSGI layer, companion.http.headers). Throttles and audit use it."""
    return request.remote_addr or "unknown"


def refusal_of(patient_id: str, operation: Operation) -> str | None:
    """Why the caller may not perform ``operation`` on ``patient_id``'s record (as :func:`require_patient` would
    refuse it), or None when they may: what a page offers. Nothing is recorded or raised."""
    grant = services().access.for_acting(grant_for(patient_id), operation)
    return None if grant.decide(operation) is Decision.ALLOW else refusal(grant, operation)


def grant_for(patient_id: str) -> Grant:
    """The caller's standing with ``patient_id``, decided at most once per request."""
    grants: dict[str, Grant] = g.setdefault("grants", {})
    if patient_id not in grants:
        grants[patient_id] = services().access.grant(g.actor, patient_id)
    return grants[patient_id]


def require_patient(patient_id: str, operation: Operation) -> Grant:
    """The caller's grant for ``patient_id`` if it allows ``operation``; NotFound (no relationship) or
    Forbidden (a relationship that does not allow this act) otherwise, each audited as a denial."""
    grant = services().access.for_acting(grant_for(patient_id), operation)
    decision = grant.decide(operation)
    if decision is Decision.ALLOW:
        return grant
    auditing.note(patient_ids=[patient_id], resource="patient", action=_action_of(operation))
    if decision is Decision.HIDE:
        raise NotFound(NOT_FOUND)
    raise Forbidden(refusal(grant, operation))


def patient_may(operation: Operation | Callable[[], Operation]) -> Callable[..., Grant]:
    """:func:`require_patient` for the patient in the route's URL, as a function of the URL's parts: a route's
    check of the caller declared with it (companion.http.idempotency's ``access``). ``operation`` may be a function
    naming the operation for this caller."""
    def check(patient_id: str, **url) -> Grant:
        return require_patient(patient_id, operation() if callable(operation) else operation)

    return check


def _action_of(operation: Operation) -> str:
    return {Operation.READ: "R", Operation.EXPORT: "E"}.get(operation, "U")


def _action_of_method() -> str:
    return {"GET": "R", "HEAD": "R", "POST": "C", "DELETE": "D"}.get(request.method, "U")


def authenticate(token: str) -> tuple[Actor, Account | None]:
    """The caller behind a bearer token (Unauthorized if it is not a live one), and their account (None for a
    gateway)."""
    svc = services()
    actor = svc.tokens.actor_from(token)
    if actor.role is Role.GATEWAY:
        if not svc.gateways.is_active(actor.id):
            raise Unauthorized("invalid or expired token")
        return actor, None
    return actor, svc.accounts.require_live_session(actor)


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def gate_patient_in_url(action: str) -> None:
    """Before the body is even parsed: a caller with no relationship to the patient in the URL gets the
    same 404 whatever they send, so neither validation errors nor timing reveal the patient."""
    patient_id = (request.view_args or {}).get("patient_id")
    if patient_id is not None and grant_for(patient_id).relationship is Relationship.NONE:
        auditing.note(patient_ids=[patient_id], resource="patient", action=action)
        raise NotFound(NOT_FOUND)


def install(app: Flask) -> None:
    @app.before_request
    def authenticate_and_gate():
        if request.routing_exception is not None or request.endpoint is None:
            return None  # Flask answers 404/405 itself, through the problem handler
        if request.endpoint.startswith(FRAMEWORK_ENDPOINTS):
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
        try:
            g.actor, g.account = authenticate(token)
        except (Unauthorized, GatewayPaused):
            # Refused (or told to wait), and recorded under the account or gateway the token names if it is one we signed (a session
            # ended by a deactivation, a closure or a revoked gateway): the patient's history says who tried.
            g.actor = services().tokens.claimed_actor(token)
            if g.actor is not None and g.actor.role is Role.GATEWAY:
                # Its calls name no patient in the URL: its record still says whose data they were about.
                auditing.deny(services().gateways.paired_with(g.actor.id))
            raise
        if g.actor.role.value not in roles:
            raise Forbidden("this role may not call this route")
        gate_patient_in_url(_action_of_method())
        auditing.begin_write()
        return None
