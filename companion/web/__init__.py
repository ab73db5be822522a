"""The clinician dashboard: server-rendered pages beside (not inside) the JSON API.

Same rules as the API, enforced by this blueprint's own gate because pages authenticate with a
session cookie rather than a bearer token: every view declares its roles (`@allow`/`@public`, from
companion.api.security), undeclared is unreachable, a caller unrelated to the patient in the URL
gets 404, a role the page does not serve gets 403, every form carries a CSRF token, and every
patient view is audited.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Flask, current_app, g, redirect, render_template, request, url_for

from companion.api import auditing
from companion.api.security import PUBLIC, declared_roles
from companion.domain.access import Actor, Relationship, Role
from companion.domain.errors import DomainError, Forbidden, NotFound, Unauthorized
from companion.store.accounts import now
from companion.store.web_sessions import WebSessions

bp = Blueprint("web", __name__, url_prefix="/clinician", template_folder="templates")
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'none'; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def session_cookie_name() -> str:
    # The __Host- prefix makes the browser insist on Secure, Path=/ and no Domain.
    return "__Host-companion_web" if current_app.extensions["companion"].settings.is_production else "companion_web"


def set_session_cookie(response, token: str) -> None:
    secure = current_app.extensions["companion"].settings.is_production
    response.set_cookie(session_cookie_name(), token, httponly=True, samesite="Strict", secure=secure, path="/")


def web_sessions() -> WebSessions:
    return WebSessions(current_app.extensions["companion"].db)


def check_csrf(expected: str) -> None:
    sent = request.form.get("csrf_token", "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden("this form has expired; reload the page and try again")


@bp.before_request
def gate():
    roles = declared_roles(current_app, request.endpoint, request.method)
    if not roles:
        raise NotFound("no such page")
    if PUBLIC in roles:
        return None
    session = web_sessions().live(request.cookies.get(session_cookie_name()), now())
    if session is None or session["stage"] != "full":
        if request.method == "GET":
            return redirect(url_for("web.login", next=request.path))
        raise Unauthorized("your session has ended; sign in again")
    web_sessions().touch(session, now())
    g.actor = Actor(id=session["user_id"], role=Role(session["role"]))
    g.web_session = session
    if session["role"] not in roles:
        raise Forbidden("this page is for clinicians")
    patient_id = (request.view_args or {}).get("patient_id")
    if patient_id is not None:
        relationship, _ = current_app.extensions["companion"].access.relationship(g.actor, patient_id)
        if relationship is Relationship.NONE:
            auditing.note(patient_ids=[patient_id], resource="patient", action="R" if request.method == "GET" else "U")
            raise NotFound("no such patient, or no access to them")
    if request.method == "POST":
        check_csrf(session["csrf_token"])
    return None


@bp.errorhandler(DomainError)
def error_page(exc: DomainError):
    return render_template("error.html", status=exc.status, title=exc.title, detail=exc.detail), exc.status, exc.headers


@bp.after_request
def page_headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint != "web.static_file":
        response.headers["Cache-Control"] = "no-store"
    return response


def register(app: Flask) -> None:
    """Mount the dashboard at /clinician (outside the OpenAPI document)."""
    from companion.web import login, pages  # noqa: F401 - the views attach themselves to `bp`

    app.register_blueprint(bp)
