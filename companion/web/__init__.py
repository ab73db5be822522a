"""The clinician dashboard: server-rendered pages beside (not inside) the JSON API.

Same rules as the API, enforced by this blueprint's own gate because pages authenticate with a
session cookie rather than a bearer token: every view declares its roles (`@allow`/`@public`, from
companion.http.security), undeclared is unreachable, a caller unrelated to the patient in the URL
gets 404, a role the page does not serve gets 403, every form carries a CSRF token, and every
patient view is audited.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Flask, current_app, g, redirect, render_template, request, url_for

from companion.domain.access import Actor, Role
from companion.domain.errors import DomainError, Forbidden, NotFound, Unauthorized
from companion.http import auditing, services
from companion.http.problems import status_of
from companion.http.security import PUBLIC, declared_roles, gate_patient_in_url

bp = Blueprint("web", __name__, url_prefix="/clinician", template_folder="templates")
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'none'; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def session_cookie_name() -> str:
    # The __Host- prefix makes the browser insist on Secure, Path=/ and no Domain.
    return "__Host-companion_web" if services().settings.is_production else "companion_web"


def set_session_cookie(response, token: str) -> None:
    secure = services().settings.is_production
    response.set_cookie(session_cookie_name(), token, httponly=True, samesite="Strict", secure=secure, path="/")


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
    session = services().accounts.web_session(request.cookies.get(session_cookie_name()))
    if session is None or session["stage"] != "full":
        if request.method == "GET":
            auditing.deny((request.view_args or {}).get("patient_id"))  # a refusal, though answered by a redirect
            return redirect(url_for("web.login", next=request.path))
        raise Unauthorized("your session has ended; sign in again")
    g.actor = Actor(id=session["user_id"], role=Role(session["role"]))
    g.web_session = session
    if session["role"] not in roles:
        raise Forbidden("this page is for clinicians")
    gate_patient_in_url("R" if request.method == "GET" else "U")
    if request.method == "POST":
        check_csrf(session["csrf_token"])
    auditing.begin_write()
    return None


@bp.errorhandler(DomainError)
def error_page(exc: DomainError):
    status, title, headers = status_of(exc)
    patient_id = (request.view_args or {}).get("patient_id")
    # A form of a patient's page that was refused: back to that page (the form is there, as it was).
    back = url_for("web.patient", patient_id=patient_id) if status == 422 and patient_id else None
    return render_template("error.html", status=status, title=title, detail=exc.detail or title,
                           back=back), status, headers


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
